using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using Idem;
using Idem.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Idem.Gateway.FunctionalTests;

/// <summary>
/// The API behind the gateway: a real Kestrel server on a loopback port that counts how often each operation starts
/// and completes (completion is only counted when the call was not cancelled).
/// </summary>
public sealed class CountingUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, int> _started = new();
    private readonly ConcurrentDictionary<string, int> _completed = new();
    private readonly ConcurrentDictionary<string, int> _cancelled = new();
    private readonly ConcurrentDictionary<string, int> _arrived = new();

    private CountingUpstream(WebApplication app) => _app = app;

    public Uri Address { get; private set; } = null!;

    public ConcurrentQueue<string?> RequestIds { get; } = new();

    public int Started(string op) => _started.GetValueOrDefault(op);

    public int Completed(string op) => _completed.GetValueOrDefault(op);

    public int Cancelled(string op) => _cancelled.GetValueOrDefault(op);

    /// <summary>Requests that reached the upstream for <paramref name="op"/>, replays by its own Idem included.</summary>
    public int Arrived(string op) => _arrived.GetValueOrDefault(op);

    /// <summary>All operations that reached the upstream at least once.</summary>
    public IEnumerable<string> ArrivedOperations => _arrived.Keys;

    /// <summary>
    /// Starts the upstream. With <paramref name="honourIdempotencyKey"/> it is itself protected by Idem (in-memory store),
    /// as a real upstream behind the gateway would be: a forward that reaches it twice with the same Idempotency-Key
    /// (the gateway's completion was lost, for example to a SIGKILL) is answered with the first response and counted
    /// once in <see cref="Started"/>/<see cref="Completed"/>; <see cref="Arrived"/> still counts every forward.
    /// </summary>
    public static async Task<CountingUpstream> StartAsync(bool honourIdempotencyKey = false)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        if (honourIdempotencyKey)
        {
            builder.Services.AddIdempotency().UseInMemoryStore();
        }

        var app = builder.Build();
        var upstream = new CountingUpstream(app);
        if (honourIdempotencyKey)
        {
            app.Use(async (context, next) =>
            {
                if (!HttpMethods.IsGet(context.Request.Method))
                {
                    upstream._arrived.AddOrUpdate(context.Request.Path.Value!.Split('/')[^1], 1, static (_, c) => c + 1);
                }

                await next(context);
            });
            app.UseRouting();
            app.UseIdempotency();
        }

        // POST /…/{op}?delayMs=N&failFirst=N: counts, optionally waits, answers 201 with a fresh id and the body's hash.
        var writes = app.MapMethods("/{**path}", ["POST", "PUT", "PATCH", "DELETE"], async (HttpContext context, string path, int? delayMs, int? failFirst) =>
        {
            var op = path.Split('/')[^1];
            var n = upstream._started.AddOrUpdate(op, 1, static (_, c) => c + 1);
            upstream.RequestIds.Enqueue(context.Request.Headers["X-Request-Id"].ToString());
            using var body = new MemoryStream();
            await context.Request.Body.CopyToAsync(body);
            if (delayMs is > 0)
            {
                try
                {
                    await Task.Delay(delayMs.Value, context.RequestAborted);
                }
                catch (OperationCanceledException)
                {
                    upstream._cancelled.AddOrUpdate(op, 1, static (_, c) => c + 1);
                    throw;
                }
            }

            upstream._completed.AddOrUpdate(op, 1, static (_, c) => c + 1);
            if (failFirst is { } f && n <= f)
            {
                return Results.Problem("upstream failure", statusCode: 500);
            }

            context.Response.Headers.Location = $"/{op}/{n}";
            return Results.Json(new
            {
                id = Guid.NewGuid(),
                execution = n,
                bodyLength = body.Length,
                bodySha256 = Convert.ToHexString(SHA256.HashData(body.ToArray())),
                requestId = context.Request.Headers["X-Request-Id"].ToString(),
            }, statusCode: 201);
        });
        if (honourIdempotencyKey)
        {
            writes.RequireIdempotency();
        }

        app.MapGet("/{**path}", (string path) => Results.Json(new { path, started = upstream.Started(path.Split('/')[^1]) }));

        await app.StartAsync();
        upstream.Address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        return upstream;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
