// Redis Cluster failover, measured: how many acknowledged claims a master takes with it when it is SIGKILLed in the
// middle of a claim storm (each one is a key a retry would execute a second time), with and without
// RequiredReplicaAcknowledgements (WAIT); and what WAIT costs per claim + completion on a healthy cluster.
// Usage: dotnet Idem.Redis.Failover.dll RUNS OUTPUT.md   (each run starts its own 3+3 cluster on loopback)
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Idem;
using Idem.Redis;
using Idem.TestUtils;
using StackExchange.Redis;

var runs = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 5;
var output = args.Length > 1 ? args[1] : "redis-failover-results.md";
const int Workers = 32;
var response = new StoredResponse(201, [new("Content-Type", "application/json")], "{\"id\":1}"u8.ToArray());

var rows = new List<string>();
foreach (var replicas in new[] { 0, 1 })
{
    long totalAcked = 0, totalLost = 0, totalErrors = 0;
    var runsWithLoss = 0;
    var perRun = new List<string>();
    for (var run = 1; run <= runs; run++)
    {
        var (acked, lost, errors, failoverMs) = await FailoverRunAsync(replicas);
        totalAcked += acked;
        totalLost += lost;
        totalErrors += errors;
        runsWithLoss += lost > 0 ? 1 : 0;
        perRun.Add(lost.ToString(CultureInfo.InvariantCulture));
        Console.WriteLine($"replicas={replicas} run {run}/{runs}: {acked} claims acknowledged by the killed master, {lost} lost in the failover, {errors} claim errors, all slots served again after {failoverMs} ms");
    }

    rows.Add($"| {(replicas == 0 ? "0 (default, asynchronous)" : "1 (`WAIT 1`)")} | {runs} | {totalAcked} | {totalLost} | {runsWithLoss} | {string.Join(", ", perRun)} | {totalErrors} |");
}

var latency = await LatencyAsync();

var report = $"""
    # Redis Cluster failover: duplicates and the cost of WAIT

    Measured by `benchmarks/redis-failover.sh` ({DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, Redis
    `{RedisVersion()}`), on this box while other work shared it. Each run starts a private cluster (3 masters + 3
    replicas, `cluster-node-timeout 1000`) on loopback, runs {Workers} concurrent workers claiming fresh keys through
    `RedisIdempotencyStore` (one configuration string listing the six nodes), SIGKILLs one master about 1 s into the
    storm, waits until every slot is served again, and then asks the promoted replica for every key the killed master
    had acknowledged as claimed. A key it does not have is a **lost acknowledged claim**: a retry of that request would
    claim it again and execute a second time.

    | `RequiredReplicaAcknowledgements` | Runs | Claims acknowledged by the killed master | Lost in the failover | Runs with a loss | Lost per run | Claims answered with an error (503) |
    |---|---|---|---|---|---|---|
    {string.Join("\n", rows)}

    The deterministic version of the same hazard is a test (`RedisClusterFailoverTests`): with the replica frozen and
    its replication link cut, every claim the master acknowledges is lost without `WAIT`, and with `WAIT 1` none is
    acknowledged at all (each is released and answered 503).

    ## Cost of `WAIT 1` on a healthy cluster

    Claim + complete of fresh keys, {LatencyOps} operations per setting, {LatencyConcurrency} concurrent callers,
    alternating settings in {LatencyRounds} rounds in the same run:

    | `RequiredReplicaAcknowledgements` | claim + complete, p50 | p99 | throughput |
    |---|---|---|---|
    {latency}
    """;
await File.WriteAllTextAsync(output, report.Replace("\n    ", "\n", StringComparison.Ordinal));
Console.WriteLine($"wrote {output}");

async Task<(long Acked, long Lost, long Errors, long FailoverMs)> FailoverRunAsync(int replicas)
{
    await using var cluster = await RedisCluster.StartPrivateAsync();
    var prefix = "fo:" + Guid.NewGuid().ToString("N")[..8] + ":";
    var options = new RedisIdempotencyStoreOptions
    {
        Configuration = cluster.Configuration,
        KeyPrefix = prefix,
        RequiredReplicaAcknowledgements = replicas,
        OperationTimeout = TimeSpan.FromSeconds(1),
        ReplicaAcknowledgementTimeout = TimeSpan.FromMilliseconds(500),
    };
    var victim = (await cluster.MasterPortsAsync())[0];
    var acknowledged = new ConcurrentQueue<string>();
    long errors = 0;
    await using var store = new RedisIdempotencyStore(options);
    await using var router = await ConnectionMultiplexer.ConnectAsync(cluster.Configuration + ",allowAdmin=true");
    await store.GetAsync("warm-up", CancellationToken.None);

    using var stop = new CancellationTokenSource();
    var next = 0;
    var workers = Enumerable.Range(0, Workers).Select(_ => Task.Run(async () =>
    {
        while (!stop.IsCancellationRequested)
        {
            var key = "k" + Interlocked.Increment(ref next).ToString(CultureInfo.InvariantCulture);
            try
            {
                var claim = await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromMinutes(5), TimeSpan.FromHours(1)), CancellationToken.None);
                if (claim.Status == ClaimStatus.Claimed)
                {
                    acknowledged.Enqueue(key);
                }
            }
            catch (Exception ex) when (ex is RedisException or TimeoutException or ObjectDisposedException)
            {
                Interlocked.Increment(ref errors);
                await Task.Delay(20);
            }
        }
    })).ToList();

    await Task.Delay(1000);
    var topology = (await router.GetServer("127.0.0.1", victim).ClusterNodesAsync())!;
    var killedAt = Stopwatch.StartNew();
    await cluster.KillAsync(victim);
    await cluster.WaitForFailoverAsync(TimeSpan.FromSeconds(60));
    var failoverMs = killedAt.ElapsedMilliseconds;
    await stop.CancelAsync();
    await Task.WhenAll(workers);

    // Which acknowledged keys lived on the killed master (routing decided before the kill: slots do not move).
    var onVictim = new List<string>();
    foreach (var key in acknowledged)
    {
        var slot = router.HashSlot(prefix + "{" + key + "}");
        if (topology.GetBySlot(slot)?.EndPoint is IPEndPoint { Port: var port } && port == victim)
        {
            onVictim.Add(key);
        }
    }

    long lost = 0;
    await using var after = new RedisIdempotencyStore(options);
    foreach (var key in onVictim)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                if (await after.GetAsync(key, CancellationToken.None) is null)
                {
                    lost++;
                }

                break;
            }
            catch (Exception ex) when ((ex is RedisException or TimeoutException) && attempt < 50)
            {
                await Task.Delay(200);
            }
        }
    }

    return (onVictim.Count, lost, errors, failoverMs);
}

async Task<string> LatencyAsync()
{
    await using var cluster = await RedisCluster.StartPrivateAsync();
    var samples = new Dictionary<int, List<double>> { [0] = [], [1] = [] };
    var elapsed = new Dictionary<int, double> { [0] = 0, [1] = 0 };
    var stores = new Dictionary<int, RedisIdempotencyStore>();
    foreach (var replicas in new[] { 0, 1 })
    {
        stores[replicas] = new RedisIdempotencyStore(new RedisIdempotencyStoreOptions
        {
            Configuration = cluster.Configuration,
            KeyPrefix = "lat" + replicas + ":",
            RequiredReplicaAcknowledgements = replicas,
            ReplicaAcknowledgementTimeout = TimeSpan.FromSeconds(1),
        });
        await stores[replicas].GetAsync("warm-up", CancellationToken.None);
    }

    var next = 0;
    for (var round = 0; round < LatencyRounds; round++)
    {
        foreach (var replicas in new[] { 0, 1 })
        {
            var store = stores[replicas];
            var perCaller = LatencyOps / LatencyRounds / LatencyConcurrency;
            var bag = new ConcurrentBag<double>();
            var clock = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, LatencyConcurrency).Select(_ => Task.Run(async () =>
            {
                for (var i = 0; i < perCaller; i++)
                {
                    var key = "k" + Interlocked.Increment(ref next).ToString(CultureInfo.InvariantCulture);
                    var owner = Guid.NewGuid();
                    var started = Stopwatch.GetTimestamp();
                    await store.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromMinutes(5), TimeSpan.FromHours(1)), CancellationToken.None);
                    await store.CompleteAsync(key, owner, response, TimeSpan.FromHours(1), CancellationToken.None);
                    bag.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                }
            })));
            elapsed[replicas] += clock.Elapsed.TotalSeconds;
            samples[replicas].AddRange(bag);
        }
    }

    foreach (var store in stores.Values)
    {
        await store.DisposeAsync();
    }

    var lines = new List<string>();
    foreach (var replicas in new[] { 0, 1 })
    {
        var sorted = samples[replicas].Order().ToArray();
        var p50 = sorted[sorted.Length / 2];
        var p99 = sorted[(int)(sorted.Length * 0.99)];
        var throughput = sorted.Length / elapsed[replicas];
        lines.Add($"| {replicas} | {p50:F2} ms | {p99:F2} ms | {throughput:F0} /s |");
        Console.WriteLine(lines[^1]);
    }

    return string.Join("\n", lines);
}

static string RedisVersion()
{
    using var process = Process.Start(new ProcessStartInfo("redis-server", "--version") { RedirectStandardOutput = true })!;
    var text = process.StandardOutput.ReadToEnd();
    process.WaitForExit();
    return text.Split(' ').FirstOrDefault(t => t.StartsWith("v=", StringComparison.Ordinal))?[2..] ?? "?";
}

internal static partial class Program
{
    private const int LatencyOps = 20_000;
    private const int LatencyConcurrency = 16;
    private const int LatencyRounds = 4;
}
