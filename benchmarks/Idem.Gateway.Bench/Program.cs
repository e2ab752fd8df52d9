// The two baselines of benchmarks/gateway.sh, in one small program:
//   upstream --urls URLS            a fast API: POST /orders -> 201 with a small JSON body (what every proxy forwards to)
//   yarp UPSTREAM --urls URLS       plain YARP, a catch-all route to UPSTREAM, nothing else (what Idem Gateway is compared with)
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Configuration;

if (args.Length < 1 || (args[0] != "upstream" && args[0] != "yarp") || (args[0] == "yarp" && args.Length < 2))
{
    Console.Error.WriteLine("usage: Idem.Gateway.Bench upstream --urls URLS | yarp UPSTREAM --urls URLS");
    return 2;
}

var builder = WebApplication.CreateSlimBuilder(args[0] == "yarp" ? args[2..] : args[1..]);
builder.Logging.ClearProviders();
if (args[0] == "yarp")
{
    builder.Services.AddReverseProxy().LoadFromMemory(
        [new RouteConfig { RouteId = "default", ClusterId = "upstream", Match = new RouteMatch { Path = "{**catch-all}" } }],
        [new ClusterConfig { ClusterId = "upstream", Destinations = new Dictionary<string, DestinationConfig> { ["upstream"] = new() { Address = args[1] } } }]);
}

var app = builder.Build();
if (args[0] == "yarp")
{
    app.MapReverseProxy();
}
else
{
    long counter = 0;
    var body = "{\"id\":\"00000000-0000-0000-0000-000000000000\",\"status\":\"created\",\"amount\":42}"u8.ToArray();
    app.MapPost("/orders", async context =>
    {
        Interlocked.Increment(ref counter);
        await context.Request.Body.CopyToAsync(Stream.Null);
        context.Response.StatusCode = StatusCodes.Status201Created;
        context.Response.ContentType = "application/json";
        context.Response.ContentLength = body.Length;
        await context.Response.Body.WriteAsync(body);
    });
    app.MapGet("/count", () => Interlocked.Read(ref counter));
}

await app.RunAsync();
return 0;
