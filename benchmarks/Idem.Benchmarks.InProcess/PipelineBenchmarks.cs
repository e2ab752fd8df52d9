using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http.Features;

namespace Idem.Benchmarks.InProcess;

[MemoryDiagnoser]
public class PipelineBenchmarks
{
    private static readonly byte[] Body = Encoding.UTF8.GetBytes("{\"amount\":42}");

    private Pipeline _bare = null!, _noOp = null!, _memory = null!, _replay = null!, _cached = null!;
    private long _keys;

    [GlobalSetup]
    public async Task SetupAsync()
    {
        _bare = Pipeline.Build(null);
        _noOp = Pipeline.Build(_ => new NoOpStore());
        _memory = Pipeline.Build(_ => new InMemoryIdempotencyStore());
        _replay = Pipeline.Build(_ => new InMemoryIdempotencyStore());
        _cached = Pipeline.Build(_ => new LocalReplayCacheStore(new InMemoryIdempotencyStore()));
        foreach (var pipeline in new[] { _replay, _cached })
        {
            await InvokeAsync(pipeline, "replayed"); // The execution the replays replay.
        }
    }

    [Benchmark(Baseline = true)]
    public Task Bare() => InvokeAsync(_bare, NextKey());

    [Benchmark]
    public Task NoOpStore() => InvokeAsync(_noOp, NextKey());

    [Benchmark]
    public Task InMemoryNewKey() => InvokeAsync(_memory, NextKey());

    [Benchmark]
    public Task InMemoryReplay() => InvokeAsync(_replay, "replayed");

    [Benchmark]
    public Task CachedReplay() => InvokeAsync(_cached, "replayed");

    private string NextKey() => "k-" + (_keys++).ToString("x", CultureInfo.InvariantCulture);

    private static async Task InvokeAsync(Pipeline pipeline, string key)
    {
        var context = NewRequest(pipeline.Services, key);
        await pipeline.Invoke(context);
        if (context.Response.StatusCode != StatusCodes.Status201Created)
        {
            throw new InvalidOperationException($"status {context.Response.StatusCode}, expected 201.");
        }
    }

    // What Kestrel would hand the pipeline for `POST /orders` with a 13-byte JSON body and a key.
    private static DefaultHttpContext NewRequest(IServiceProvider services, string key)
    {
        var features = new FeatureCollection();
        features.Set<IHttpRequestFeature>(new HttpRequestFeature { Method = "POST", Path = "/orders", Scheme = "http", Protocol = "HTTP/1.1", Body = new MemoryStream(Body, writable: false) });
        features.Set<IHttpResponseFeature>(new HttpResponseFeature());
        features.Set<IHttpResponseBodyFeature>(new StreamResponseBodyFeature(Stream.Null));
        features.Set<IHttpRequestLifetimeFeature>(new HttpRequestLifetimeFeature());
        features.Set<IHttpRequestBodyDetectionFeature>(RequestHasBody.Instance);
        var context = new DefaultHttpContext(features) { RequestServices = services };
        context.Request.ContentType = "application/json";
        context.Request.ContentLength = Body.Length;
        context.Request.Headers["Idempotency-Key"] = key;
        return context;
    }
}

internal sealed class Pipeline(RequestDelegate invoke, IServiceProvider services)
{
    public RequestDelegate Invoke { get; } = invoke;

    public IServiceProvider Services { get; } = services;

    public static Pipeline Build(Func<IServiceProvider, IIdempotencyStore>? store)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, InProcessJsonContext.Default));
        if (store is not null)
        {
            builder.Services.AddIdempotency(o => o.PurgeInterval = TimeSpan.Zero).UseStore(store);
        }

        var app = builder.Build();
        app.UseRouting();
        if (store is not null)
        {
            app.UseIdempotency();
        }

        var orders = app.MapPost("/orders", (CreateOrder order) =>
        {
            var id = Guid.NewGuid();
            return TypedResults.Created($"/orders/{id}", new Order(id, order.Amount));
        });
        if (store is not null)
        {
            orders.RequireIdempotency();
        }

        app.UseEndpoints(_ => { });
        return new Pipeline(((IApplicationBuilder)app).Build(), app.Services);
    }
}

/// <summary>Claims every key and stores nothing: what Idem's middleware and executor cost without a store.</summary>
internal sealed class NoOpStore : IIdempotencyStore
{
    public ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken) => ValueTask.FromResult(ClaimResult.NewClaim);

    public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken) => ValueTask.FromResult(true);

    public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken) => ValueTask.FromResult(true);

    public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken) => ValueTask.FromResult(true);

    public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken) => ValueTask.FromResult<IdempotencyRecord?>(null);

    public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken) => ValueTask.FromResult(0);

    public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) => ValueTask.CompletedTask;
}

/// <summary>Kestrel's answer for a request with Content-Length: minimal APIs bind a body only when it says yes.</summary>
internal sealed class RequestHasBody : IHttpRequestBodyDetectionFeature
{
    public static readonly RequestHasBody Instance = new();

    public bool CanHaveBody => true;
}

internal sealed record CreateOrder(int Amount);

internal sealed record Order(Guid Id, int Amount);

[JsonSerializable(typeof(CreateOrder))]
[JsonSerializable(typeof(Order))]
[JsonSourceGenerationOptions(System.Text.Json.JsonSerializerDefaults.Web)]
internal sealed partial class InProcessJsonContext : JsonSerializerContext;
