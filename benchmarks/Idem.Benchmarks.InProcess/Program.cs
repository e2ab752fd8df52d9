// Idem's own cost per request, measured in process: the same POST /orders pipeline (routing, body binding, a 201 with
// a Location and a JSON body) invoked directly with a fresh HttpContext per request, bare and under Idem, with no
// sockets, kernel or client in the way. The wrk benchmark (run.sh) measures what users see; on a noisy shared box its
// ratios move by several microseconds between runs, which hides the sub-microsecond changes this one resolves.
//
//   dotnet Idem.Benchmarks.InProcess.dll [--rounds 15] [--requests 20000] [--pipelines bare,no-op,memory]
//
// --pipelines runs a subset, for a profiler: profile bare alone and no-op alone, and the difference is Idem's.
//
// Pipelines, run in alternating rounds after three warm-up rounds, one thread:
//   bare     no Idem services, middleware or metadata
//   no-op    Idem's middleware and executor over a store that claims and completes without storing (their cost alone)
//   memory   Idem over the in-memory store, a new key per request (records accumulate, as in a real run)
// Reported: the median microseconds per request of each, the overhead over bare (median of per-round differences),
// and the bytes each allocates per request.
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using Idem;
using Microsoft.AspNetCore.Http.Features;

var rounds = int.Parse(ReadOption(args, "--rounds", "15"), CultureInfo.InvariantCulture);
var requestsPerRound = int.Parse(ReadOption(args, "--requests", "20000"), CultureInfo.InvariantCulture);
const int WarmupRounds = 3;

var stores = new Dictionary<string, Func<IServiceProvider, IIdempotencyStore>?>
{
    ["bare"] = null,
    ["no-op"] = _ => new NoOpStore(),
    ["memory"] = _ => new InMemoryIdempotencyStore(),
};
var selected = ReadOption(args, "--pipelines", string.Join(',', stores.Keys)).Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
var unknown = selected.Where(name => !stores.ContainsKey(name)).ToArray();
if (unknown.Length > 0)
{
    Console.Error.WriteLine($"Unknown pipeline(s) {string.Join(", ", unknown)}: use {string.Join(", ", stores.Keys)}.");
    return 2;
}

var pipelines = selected.Select(name => Pipeline.Build(name, stores[name])).ToArray();
var body = Encoding.UTF8.GetBytes("{\"amount\":42}");
long keyCounter = 0;

for (var round = 0; round < WarmupRounds + rounds; round++)
{
    foreach (var pipeline in pipelines)
    {
        var allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        var started = Stopwatch.GetTimestamp();
        for (var i = 0; i < requestsPerRound; i++)
        {
            var context = NewRequest(pipeline.Services, body, "k-" + (keyCounter++).ToString("x", CultureInfo.InvariantCulture));
            await pipeline.Invoke(context);
            if (context.Response.StatusCode != StatusCodes.Status201Created)
            {
                throw new InvalidOperationException($"{pipeline.Name}: status {context.Response.StatusCode}, expected 201.");
            }
        }

        if (round >= WarmupRounds)
        {
            pipeline.Microseconds.Add(Stopwatch.GetElapsedTime(started).TotalMicroseconds / requestsPerRound);
            pipeline.BytesPerRequest = (GC.GetAllocatedBytesForCurrentThread() - allocatedBefore) / (double)requestsPerRound;
        }
    }
}

var bare = pipelines.FirstOrDefault(p => p.Name == "bare");
Console.WriteLine($"{rounds} rounds of {requestsPerRound} requests per pipeline, alternating, after {WarmupRounds} warm-up rounds");
Console.WriteLine();
Console.WriteLine("| pipeline | µs/request (median) | overhead over bare (median, min) | bytes/request |");
Console.WriteLine("|---|---:|---:|---:|");
foreach (var pipeline in pipelines)
{
    var overhead = bare is null || pipeline == bare ? "–" : $"{Median(pipeline.Microseconds.Zip(bare.Microseconds, (a, b) => a - b)):F2} ({pipeline.Microseconds.Zip(bare.Microseconds, (a, b) => a - b).Min():F2})";
    Console.WriteLine($"| {pipeline.Name} | {Median(pipeline.Microseconds):F2} | {overhead} | {pipeline.BytesPerRequest:F0} |");
}

return 0;

static double Median(IEnumerable<double> values)
{
    var sorted = values.Order().ToArray();
    return sorted[sorted.Length / 2];
}

static string ReadOption(string[] args, string name, string fallback)
{
    var index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length ? args[index + 1] : fallback;
}

// What Kestrel would hand the pipeline for `POST /orders` with a 13-byte JSON body and a key.
static DefaultHttpContext NewRequest(IServiceProvider services, byte[] body, string key)
{
    var features = new FeatureCollection();
    features.Set<IHttpRequestFeature>(new HttpRequestFeature { Method = "POST", Path = "/orders", Scheme = "http", Protocol = "HTTP/1.1", Body = new MemoryStream(body, writable: false) });
    features.Set<IHttpResponseFeature>(new HttpResponseFeature());
    features.Set<IHttpResponseBodyFeature>(new StreamResponseBodyFeature(Stream.Null));
    features.Set<IHttpRequestLifetimeFeature>(new HttpRequestLifetimeFeature());
    features.Set<IHttpRequestBodyDetectionFeature>(RequestHasBody.Instance);
    var context = new DefaultHttpContext(features) { RequestServices = services };
    context.Request.ContentType = "application/json";
    context.Request.ContentLength = body.Length;
    context.Request.Headers["Idempotency-Key"] = key;
    return context;
}

internal sealed class Pipeline(string name, RequestDelegate invoke, IServiceProvider services)
{
    public string Name { get; } = name;

    public RequestDelegate Invoke { get; } = invoke;

    public IServiceProvider Services { get; } = services;

    public List<double> Microseconds { get; } = [];

    public double BytesPerRequest { get; set; }

    public static Pipeline Build(string name, Func<IServiceProvider, IIdempotencyStore>? store)
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
        return new Pipeline(name, ((IApplicationBuilder)app).Build(), app.Services);
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
