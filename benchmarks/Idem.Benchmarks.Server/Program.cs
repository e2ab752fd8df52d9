// The benchmark target: POST /orders, bare or protected by Idem with the store chosen on the command line.
//
//   dotnet Idem.Benchmarks.Server.dll --store none|memory|sqlite|postgres|redis|tiered|npgsql|seredis|tiered-raw
//                                     [--connection <path or connection string>] [--redis host:port] [--local-cache true]
//                                     [--port 5080]
//
// redis and seredis take the endpoint in --connection; tiered and tiered-raw take PostgreSQL's connection string in
// --connection and Redis's in --redis. --local-cache puts WithLocalReplayCache() in front of an Idem store.
// npgsql, seredis and tiered-raw are the driver-limit baselines (DriverBaselines.cs): no Idem, the drivers alone doing the
// stores' round trips.
//
// "none" is the baseline: the same handler with no Idem services, middleware or endpoint metadata at all.
// GET /stats reports the store and how many times the handler ran, so run.sh can check that replays did not execute.
using System.Text.Json;
using System.Text.Json.Serialization;
using Idem;

var builder = WebApplication.CreateBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, BenchJsonContext.Default));

var store = (builder.Configuration["store"] ?? "memory").ToLowerInvariant();
var connection = builder.Configuration["connection"];
var port = builder.Configuration.GetValue("port", 5080);
builder.WebHost.UseUrls($"http://127.0.0.1:{port}");

var baselineKinds = new[] { "npgsql", "seredis", "tiered-raw" };
DriverBaseline? baseline = null;
if (baselineKinds.Contains(store))
{
    if (string.IsNullOrEmpty(connection) || (store == "tiered-raw" && string.IsNullOrEmpty(builder.Configuration["redis"])))
    {
        Console.Error.WriteLine($"--store {store} needs --connection (and --redis for tiered-raw).");
        return 2;
    }

    baseline = await DriverBaseline.CreateAsync(store, store == "seredis" ? null : connection, store == "seredis" ? connection : builder.Configuration["redis"]);
}
else if (store != "none")
{
    var idem = builder.Services.AddIdempotency();
    switch (store)
    {
        case "memory":
            idem.UseInMemoryStore();
            break;

        case "sqlite":
            idem.UseSqliteStore(connection ?? Path.Combine(Path.GetTempPath(), $"idem-bench-{Environment.ProcessId}.db"));
            break;

        case "postgres":
            if (string.IsNullOrEmpty(connection))
            {
                Console.Error.WriteLine("--store postgres needs --connection <connection string>.");
                return 2;
            }

            idem.UsePostgreSqlStore(connection, o => o.CreateSchemaAutomatically = true);
            break;

        case "redis":
            if (string.IsNullOrEmpty(connection))
            {
                Console.Error.WriteLine("--store redis needs --connection host:port.");
                return 2;
            }

            idem.UseRedisStore(connection);
            break;

        case "tiered":
            var redis = builder.Configuration["redis"];
            if (string.IsNullOrEmpty(connection) || string.IsNullOrEmpty(redis))
            {
                Console.Error.WriteLine("--store tiered needs --connection <PostgreSQL connection string> and --redis host:port.");
                return 2;
            }

            // The tiered store's default local replay cache is measured as the cached cases (--local-cache), so the
            // plain tiered cases measure the store itself.
            idem.UsePostgreSqlStore(connection, o => o.CreateSchemaAutomatically = true).WithRedisResponseCache(redis, configureTiering: t => t.LocalReplayCache = null);
            break;

        default:
            Console.Error.WriteLine($"Unknown --store '{store}': use none, memory, sqlite, postgres, redis, tiered, npgsql, seredis or tiered-raw.");
            return 2;
    }

    if (builder.Configuration.GetValue("local-cache", false))
    {
        idem.WithLocalReplayCache();
    }
}

var app = builder.Build();
var idemStore = store != "none" && baseline is null;
if (idemStore)
{
    app.UseIdempotency();
}

var executions = 0L;
var exceptions = 0L;
AppDomain.CurrentDomain.FirstChanceException += (_, _) => Interlocked.Increment(ref exceptions);
if (baseline is not null)
{
    app.MapPost("/orders", baseline.HandleAsync);
}
else
{
    var orders = app.MapPost("/orders", (CreateOrder order) =>
    {
        Interlocked.Increment(ref executions);
        var id = Guid.NewGuid();
        return TypedResults.Created($"/orders/{id}", new Order(id, order.Amount));
    });
    if (idemStore)
    {
        orders.RequireIdempotency();
    }
}

// Cheap profiling that needs no tools: run.sh diffs these around the timed run to get allocations and exceptions per request.
app.MapGet("/stats", () => TypedResults.Ok(new Stats(
    store,
    Interlocked.Read(ref executions) + (baseline?.Executions ?? 0),
    Interlocked.Read(ref exceptions),
    GC.GetTotalAllocatedBytes(precise: false),
    GC.CollectionCount(0),
    GC.CollectionCount(1),
    GC.CollectionCount(2),
    (long)GC.GetTotalPauseDuration().TotalMicroseconds,
    ThreadPool.CompletedWorkItemCount,
    Monitor.LockContentionCount,
    (long)Environment.CpuUsage.TotalTime.TotalMicroseconds,
    System.Runtime.JitInfo.GetCompiledMethodCount(),
    (long)System.Runtime.JitInfo.GetCompilationTime().TotalMicroseconds)));

// Opt-in (IDEM_BENCH_ALLOCATIONS=1): which types the server allocates, from the runtime's ~100 KB allocation samples.
// GET /allocations lists sampled bytes by type; it costs a little CPU, so timed runs leave it off.
using var allocations = Environment.GetEnvironmentVariable("IDEM_BENCH_ALLOCATIONS") == "1" ? new AllocationSampler() : null;
app.MapGet("/allocations", () => allocations?.Top(40) ?? "set IDEM_BENCH_ALLOCATIONS=1\n");

await app.RunAsync().ConfigureAwait(false);
if (baseline is not null)
{
    await baseline.DisposeAsync().ConfigureAwait(false);
}

return 0;

internal sealed class AllocationSampler : System.Diagnostics.Tracing.EventListener
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _bytes = new();

    public string Top(int count) => string.Join('\n', _bytes.OrderByDescending(p => p.Value).Take(count).Select(p => $"{p.Value / 1024,10} KB  {p.Key}")) + "\n";

    protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource eventSource)
    {
        if (eventSource.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(eventSource, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
        }
    }

    protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs eventData)
    {
        if (eventData.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) == true && eventData.Payload is { } payload)
        {
            var name = eventData.PayloadNames!.IndexOf("TypeName") is var t and >= 0 ? payload[t]?.ToString() ?? "?" : "?";
            var amount = eventData.PayloadNames.IndexOf("AllocationAmount64") is var a and >= 0 ? Convert.ToInt64(payload[a], System.Globalization.CultureInfo.InvariantCulture) : 100_000;
            _bytes.AddOrUpdate(name, amount, (_, v) => v + amount);
        }
    }
}

internal sealed record CreateOrder(int Amount);

internal sealed record Order(Guid Id, int Amount);

internal sealed record Stats(string Store, long Executions, long Exceptions, long AllocatedBytes, int Gen0, int Gen1, int Gen2, long GcPauseMicroseconds, long ThreadPoolWorkItems, long LockContentions, long CpuMicroseconds, long JitMethods, long JitMicroseconds);

[JsonSerializable(typeof(CreateOrder))]
[JsonSerializable(typeof(Order))]
[JsonSerializable(typeof(Stats))]
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
internal sealed partial class BenchJsonContext : JsonSerializerContext;
