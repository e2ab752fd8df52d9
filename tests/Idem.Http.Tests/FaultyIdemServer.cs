using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Idem.Http.Tests;

/// <summary>
/// A real Idem server (Kestrel on loopback, SQLite store in a temp file) whose network misbehaves on the first
/// attempt of every key: <c>POST /things/drop</c> runs the handler, lets Idem store its response, then aborts the
/// connection without a byte of answer; <c>POST /things/slow</c> runs a handler slower than the client's attempt
/// timeout (only the first execution per key is slow). <c>POST /things/ok</c> behaves. Executions are counted.
/// </summary>
internal sealed class FaultyIdemServer : IAsyncDisposable
{
    public static readonly TimeSpan SlowHandler = TimeSpan.FromMilliseconds(1500);

    private readonly WebApplication _app;
    private readonly string _directory;
    private readonly ConcurrentDictionary<string, int> _attempts = new();
    private int _executions;
    private int _requests;

    private FaultyIdemServer(WebApplication app, string directory)
    {
        _app = app;
        _directory = directory;
    }

    public Uri Address { get; private set; } = null!;

    public int Executions => Volatile.Read(ref _executions);

    public int Requests => Volatile.Read(ref _requests);

    public static async Task<FaultyIdemServer> StartAsync()
    {
        var directory = Directory.CreateTempSubdirectory("idem-http-tests").FullName;
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = directory });
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        builder.Services.AddIdempotency().UseSqliteStore(Path.Combine(directory, "idem.db"));
        var app = builder.Build();
        var server = new FaultyIdemServer(app, directory);
        server.Configure(app);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(address + "/");
        return server;
    }

    private void Configure(WebApplication app)
    {
        // Outside Idem: the network. It sees the response Idem captured and stored, and can lose it.
        app.Use(async (context, next) =>
        {
            Interlocked.Increment(ref _requests);
            var key = context.Request.Headers["Idempotency-Key"].ToString();
            var attempt = key.Length == 0 ? 1 : _attempts.AddOrUpdate(key, 1, static (_, n) => n + 1);
            if (context.Request.Path.StartsWithSegments("/things/drop") && attempt == 1)
            {
                var original = context.Response.Body;
                context.Response.Body = new MemoryStream();
                await next(context);
                context.Response.Body = original;
                context.Abort(); // the work is done and stored; the client never hears of it
                return;
            }

            await next(context);
        });
        app.UseRouting();
        app.UseIdempotency();

        var firstExecutions = new ConcurrentDictionary<string, bool>();
        app.MapPost("/things/{mode}", async (string mode, Thing thing, HttpContext context) =>
        {
            var n = Interlocked.Increment(ref _executions);
            var key = context.Request.Headers["Idempotency-Key"].ToString();
            if (mode == "slow" && firstExecutions.TryAdd(key, true))
            {
                await Task.Delay(SlowHandler, context.RequestAborted);
            }

            return Results.Created($"/things/{n}", new Thing(thing.Name, n));
        }).RequireIdempotency();
        app.MapPut("/things/{mode}", (string mode, Thing thing) =>
        {
            var n = Interlocked.Increment(ref _executions);
            return Results.Ok(new Thing(thing.Name, n));
        }).RequireIdempotency(o => o.Methods = ["PUT"]);
        app.MapGet("/headers", (HttpContext context) => context.Request.Headers["Idempotency-Key"].ToString());
    }

    public int AttemptsOf(string key) => _attempts.TryGetValue(key, out var n) ? n : 0;

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal sealed record Thing(string Name, int Number = 0);
