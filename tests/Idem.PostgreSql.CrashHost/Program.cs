// A minimal app for the crash test (Idem.PostgreSql.FunctionalTests/CrashTests.cs): one protected endpoint whose
// handler never finishes, over the PostgreSQL store. The test starts it, sends a request, waits for the
// "started <key>" line, and kills the process with SIGKILL while it owns the key.
//
// Usage: Idem.PostgreSql.CrashHost <connection string> <schema> <lease seconds>
// Prints "listening <url>" once it serves, then "started <key>" each time the handler begins.
using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

if (args.Length != 3)
{
    Console.Error.WriteLine("usage: Idem.PostgreSql.CrashHost <connection string> <schema> <lease seconds>");
    return 2;
}

var (connectionString, schema, lease) = (args[0], args[1], TimeSpan.FromSeconds(double.Parse(args[2], CultureInfo.InvariantCulture)));

var builder = WebApplication.CreateSlimBuilder();
builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
builder.Logging.ClearProviders();
builder.Services.AddIdempotency(o =>
    {
        o.PurgeInterval = TimeSpan.Zero;
        o.DefaultPolicy = o.DefaultPolicy with { Lease = lease };
    })
    .UsePostgreSqlStore(connectionString, o =>
    {
        o.SchemaName = schema;
        o.NotificationChannel = schema + "_changed";
        o.CreateSchemaAutomatically = true;
    });

var app = builder.Build();
app.UseRouting();
app.UseIdempotency();
app.MapPost("/work", async (HttpContext context) =>
{
    Console.Out.WriteLine("started " + context.Request.Headers["Idempotency-Key"]);
    Console.Out.Flush();

    // Blocks until the process is killed (Idem's execution timeout, 100 s by default, is far away).
    await Task.Delay(Timeout.Infinite, context.RequestAborted);
    return Results.Ok();
}).RequireIdempotency();

await app.StartAsync();
Console.Out.WriteLine("listening " + app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
Console.Out.Flush();
await app.WaitForShutdownAsync();
return 0;
