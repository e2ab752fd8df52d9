using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Idem.Gateway.FunctionalTests;
using Idem.TestUtils;
using Npgsql;

namespace Idem.Faults.Tests;

/// <summary>The faults the nemesis injects.</summary>
public enum FaultKind
{
    KillGateway,
    FreezePostgres,
    RestartPostgres,
    DropPostgres,
    StallPostgres,
    KillRedis,
    FreezeRedis,
    DropRedis,
}

/// <summary>One seeded run: the store mode, the faults allowed, how long and how hard.</summary>
public sealed record FaultRun
{
    public required int Seed { get; init; }

    /// <summary><c>Tiered</c> (claims in PostgreSQL, replays through Redis) or <c>Redis</c> (claims in Redis).</summary>
    public string Store { get; init; } = "Tiered";

    public required FaultKind[] Kinds { get; init; }

    public TimeSpan FaultDuration { get; init; } = TimeSpan.FromSeconds(25);

    public int Nodes { get; init; } = 2;

    public int Clients { get; init; } = 6;

    public int HotKeys { get; init; } = 3;

    public int HotClients { get; init; } = 8;

    /// <summary>The lease the gateways are configured with (the product's default).</summary>
    public TimeSpan Lease { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The lease the checker holds the run to: a key must reach a final answer within this plus
    /// <see cref="RetryBudget"/> after the faults stop. Apart from <see cref="Lease"/> so a broken configuration (a lease
    /// as long as the retention) is judged by the promise, not by its own setting.
    /// </summary>
    public TimeSpan PromisedLease { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long the upstream takes per call: long enough that a killed node holds claims in flight.</summary>
    public int UpstreamDelayMs { get; init; } = 200;

    /// <summary>How long a client keeps retrying one key once the faults stopped, on top of one lease.</summary>
    public TimeSpan RetryBudget { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Shortest and longest time a fault is held, in milliseconds. A broken configuration that only shows while a store
    /// call times out (fail-open) needs faults longer than the store's 2 s command timeout to bite every run.
    /// </summary>
    public (int Min, int Max) HoldMs { get; init; } = (300, 2500);

    /// <summary>Extra gateway arguments: how a deliberately broken configuration is run under the same harness.</summary>
    public string[] GatewayArgs { get; init; } = [];

    /// <summary>
    /// Whether the counting upstream is itself protected by Idem and honours the Idempotency-Key the gateway forwards, as
    /// a real upstream would. A gateway SIGKILLed after the upstream answered and before its completion was stored can
    /// only be covered there: the retry's forward is answered with the first response. Off, the upstream counts every
    /// forward that completed as an execution, which is how the broken builds are judged.
    /// </summary>
    public bool UpstreamHonoursKey { get; init; }
}

/// <summary>What the checker found, with the history kept on disk when anything is wrong.</summary>
public sealed record FaultReport(int Seed, IReadOnlyList<string> Violations, string? HistoryPath, string Summary);

/// <summary>
/// A Jepsen-style run: gateway processes on a private PostgreSQL and a private Redis, each behind a <see cref="FaultProxy"/>,
/// a counting upstream, clients that retry each key until a final answer, a nemesis drawing faults from a seeded
/// <see cref="Random"/>, and a checker over the recorded history. Every loop is bounded in count and time.
/// </summary>
public sealed class FaultHarness
{
    private readonly FaultRun _run;
    private readonly Random _random;
    private readonly ConcurrentQueue<HistoryEvent> _history = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly ConcurrentDictionary<FaultKind, int> _injected = new();
    private readonly ConcurrentQueue<string> _killedNodeLogs = new();
    private GatewayProcess?[] _nodes = [];

    // The Redis server the run uses now: a KillRedis fault replaces it, and the run disposes this one whatever happens.
    private RedisServer? _redis;
    private List<string> _gatewayArgs = [];
    private int _roundRobin;

    public FaultHarness(FaultRun run)
    {
        _run = run;
        _random = new Random(run.Seed);
    }

    public async Task<FaultReport> RunAsync()
    {
        await using var postgres = await PostgreSqlServer.StartPrivateAsync();
        var redis = await RedisServer.StartPrivateAsync();
        _redis = redis;
        await using var upstream = await CountingUpstream.StartAsync(_run.UpstreamHonoursKey);
        await using var pgProxy = new FaultProxy(new IPEndPoint(IPAddress.Loopback, postgres.Port));
        await using var redisProxy = new FaultProxy(IPEndPoint.Parse(redis.Endpoint));
        try
        {
            var connectionBuilder = new NpgsqlConnectionStringBuilder(await postgres.CreateDatabaseAsync())
            {
                Port = pgProxy.Port,
                Timeout = 2,
                CommandTimeout = 2,
            };

            // IDEM_FAULTS_PG_MULTIPLEXING=true|false sets Npgsql multiplexing explicitly (the store's default is on),
            // to tell a driver hang from Idem's own under the same seed.
            if (bool.TryParse(Environment.GetEnvironmentVariable("IDEM_FAULTS_PG_MULTIPLEXING"), out var multiplexing))
            {
                connectionBuilder.Multiplexing = multiplexing;
            }

            var connection = connectionBuilder.ConnectionString;
            _gatewayArgs =
            [
                "--upstream", upstream.Address.ToString().TrimEnd('/'),
                "--Idem:Store", _run.Store,
                "--Idem:PostgreSql:ConnectionString", connection,
                "--Idem:Redis:Configuration", "127.0.0.1:" + redisProxy.Port,
                "--Idem:Redis:OperationTimeout", "00:00:01",
                "--Idem:Default:Lease", _run.Lease.ToString("c", CultureInfo.InvariantCulture),
                "--Idem:Default:WaitTimeout", "00:00:05",
                .. _run.GatewayArgs,
            ];
            _nodes = new GatewayProcess?[_run.Nodes];
            for (var i = 0; i < _nodes.Length; i++)
            {
                _nodes[i] = await GatewayProcess.StartAsync(GatewayProcess.GatewayDll, _gatewayArgs, TimeSpan.FromSeconds(60));
            }

            using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = 200, PooledConnectionLifetime = TimeSpan.FromSeconds(5) };
            using var http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(15) };
            using var faulting = new CancellationTokenSource(_run.FaultDuration);
            var hardDeadline = _clock.Elapsed + _run.FaultDuration + _run.PromisedLease + _run.RetryBudget + TimeSpan.FromSeconds(10);

            var workload = new List<Task>();
            for (var c = 0; c < _run.Clients; c++)
            {
                var client = c;
                workload.Add(Task.Run(() => ClientAsync(http, client, hardDeadline, faulting.Token)));
            }

            for (var h = 0; h < _run.HotKeys; h++)
            {
                var slot = h;
                workload.Add(Task.Run(() => HotKeysAsync(http, slot, hardDeadline, faulting.Token)));
            }

            var (redisNow, faultsEnded) = await NemesisAsync(postgres, redis, pgProxy, redisProxy, faulting.Token);
            redis = redisNow;
            Record(new HistoryEvent { Kind = "faults-ended", At = faultsEnded });
            await Task.WhenAll(workload).WaitAsync(hardDeadline - _clock.Elapsed + TimeSpan.FromSeconds(60));
            return Check(upstream, faultsEnded);
        }
        finally
        {
            foreach (var node in _nodes)
            {
                if (node is not null)
                {
                    await node.DisposeAsync();
                }
            }

            await (_redis ?? redis).DisposeAsync();
        }
    }

    // ---- workload ----

    private async Task ClientAsync(HttpClient http, int client, TimeSpan hardDeadline, CancellationToken faulting)
    {
        // Keys one after another while the faults go on, and one more after they stop.
        for (var i = 0; i < 10_000 && !faulting.IsCancellationRequested; i++)
        {
            var key = $"c{client}k{i}";
            var final = await SendUntilFinalAsync(http, client, key, $"{{\"client\":{client},\"n\":{i}}}", mismatch: false, hardDeadline);
            if (final is >= 200 and < 300 && i % 4 == 0)
            {
                // The same key with another body: must be refused with 422, never executed.
                await SendUntilFinalAsync(http, client, key, $"{{\"client\":{client},\"n\":{i},\"other\":true}}", mismatch: true, hardDeadline);
            }
        }
    }

    // Storm after storm on fresh hot keys while the faults go on: a storm that begins while a store is frozen or cut off
    // is what shows a broken build (fail-open executes every request of it), so one storm per slot, started at a random
    // moment, left the catch to chance (one CI run in a few dozen missed it). Each slot draws from its own seeded Random:
    // the nemesis's stays replayable and no Random is shared between threads.
    private async Task HotKeysAsync(HttpClient http, int slot, TimeSpan hardDeadline, CancellationToken faulting)
    {
        var random = new Random(unchecked((_run.Seed * 31) + slot + 1));
        await Task.Delay(TimeSpan.FromMilliseconds(random.Next(1500)), CancellationToken.None);
        for (var round = 0; round < 1000 && !faulting.IsCancellationRequested; round++)
        {
            var key = $"hot{slot}r{round}";
            var storm = new Task[_run.HotClients];
            for (var c = 0; c < storm.Length; c++)
            {
                var client = 1000 + (slot * 100) + c;
                storm[c] = Task.Run(() => SendUntilFinalAsync(http, client, key, "{\"hot\":true}", mismatch: false, hardDeadline));
            }

            await Task.WhenAll(storm);
            await Task.Delay(TimeSpan.FromMilliseconds(random.Next(200, 1500)), CancellationToken.None);
        }
    }

    private async Task<int?> SendUntilFinalAsync(HttpClient http, int client, string key, string body, bool mismatch, TimeSpan hardDeadline)
    {
        for (var attempt = 1; attempt <= 500; attempt++)
        {
            if (_clock.Elapsed > hardDeadline)
            {
                break;
            }

            var index = Interlocked.Increment(ref _roundRobin) % _nodes.Length;
            var node = _nodes[index];
            var ev = new HistoryEvent { Kind = mismatch ? "mismatch" : "request", Client = client, Key = key, Attempt = attempt, Node = index, At = _clock.Elapsed };
            TimeSpan pause = TimeSpan.FromMilliseconds(100);
            try
            {
                if (node is null || node.HasExited)
                {
                    throw new HttpRequestException("node down");
                }

                using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(node.Address, $"/orders/{key}?delayMs={_run.UpstreamDelayMs}"))
                {
                    Content = new StringContent(body, Encoding.UTF8, "application/json"),
                };
                request.Headers.TryAddWithoutValidation("Idempotency-Key", key);
                using var response = await http.SendAsync(request);
                var bytes = await response.Content.ReadAsByteArrayAsync();
                var status = (int)response.StatusCode;
                var retryAfter = response.Headers.RetryAfter?.Delta;
                Record(ev with
                {
                    Status = status,
                    Done = _clock.Elapsed,
                    BodySha = Convert.ToHexString(SHA256.HashData(bytes))[..16],
                    RetryAfter = response.Headers.RetryAfter is not null,
                });
                if (status is >= 200 and < 300 || (status is >= 400 and < 500 && status != 409 && status != 429))
                {
                    return status;
                }

                if (retryAfter is { } after)
                {
                    pause = after < TimeSpan.FromSeconds(1) ? after : TimeSpan.FromSeconds(1);
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or IOException)
            {
                Record(ev with { Error = ex.GetType().Name, Done = _clock.Elapsed });
            }

            await Task.Delay(pause);
        }

        Record(new HistoryEvent { Kind = mismatch ? "mismatch-gave-up" : "gave-up", Client = client, Key = key, At = _clock.Elapsed });
        return null;
    }

    // ---- nemesis ----

    private async Task<(RedisServer Redis, TimeSpan FaultsEnded)> NemesisAsync(
        PostgreSqlServer postgres, RedisServer redis, FaultProxy pgProxy, FaultProxy redisProxy, CancellationToken faulting)
    {
        await Task.Delay(TimeSpan.FromSeconds(1), CancellationToken.None);
        for (var step = 0; step < 1000 && !faulting.IsCancellationRequested; step++)
        {
            var kind = _run.Kinds[_random.Next(_run.Kinds.Length)];
            var hold = TimeSpan.FromMilliseconds(_random.Next(_run.HoldMs.Min, _run.HoldMs.Max));
            var gap = TimeSpan.FromMilliseconds(_random.Next(200, 1200));
            var target = _random.Next(_nodes.Length);
            _injected.AddOrUpdate(kind, 1, static (_, n) => n + 1);
            Record(new HistoryEvent { Kind = "fault", Fault = kind.ToString(), Node = target, At = _clock.Elapsed });
            switch (kind)
            {
                case FaultKind.KillGateway:
                    if (_nodes[target] is { } victim)
                    {
                        _nodes[target] = null;
                        victim.Kill();
                        await victim.DisposeAsync();
                        _killedNodeLogs.Enqueue(victim.Logs);
                        await Task.Delay(hold, CancellationToken.None);
                        _nodes[target] = await GatewayProcess.StartAsync(GatewayProcess.GatewayDll, _gatewayArgs, TimeSpan.FromSeconds(60));
                    }

                    break;
                case FaultKind.FreezePostgres:
                    var frozen = postgres.ServerProcessIds();
                    await SignalAsync("-STOP", frozen);
                    await Task.Delay(hold, CancellationToken.None);
                    await SignalAsync("-CONT", frozen);
                    break;
                case FaultKind.RestartPostgres:
                    await postgres.StopAsync();
                    await Task.Delay(hold, CancellationToken.None);
                    await postgres.StartAsync();
                    break;
                case FaultKind.DropPostgres:
                    pgProxy.Drop();
                    await Task.Delay(hold, CancellationToken.None);
                    pgProxy.Heal();
                    break;
                case FaultKind.StallPostgres:
                    pgProxy.Stall();
                    await Task.Delay(hold, CancellationToken.None);
                    pgProxy.Heal();
                    break;
                case FaultKind.KillRedis:
                    // Killed without persistence, then a new, empty Redis behind the same address.
                    await redis.KillAsync();
                    await Task.Delay(hold, CancellationToken.None);
                    var fresh = await RedisServer.StartPrivateAsync();
                    await redis.DisposeAsync();
                    redis = fresh;
                    _redis = fresh; // what the run disposes, even when the nemesis throws later
                    redisProxy.Target = IPEndPoint.Parse(redis.Endpoint);
                    redisProxy.Drop();
                    redisProxy.Heal();
                    break;
                case FaultKind.FreezeRedis:
                    await redis.SetFrozenAsync(true);
                    await Task.Delay(hold, CancellationToken.None);
                    await redis.SetFrozenAsync(false);
                    break;
                case FaultKind.DropRedis:
                    redisProxy.Drop();
                    await Task.Delay(hold, CancellationToken.None);
                    redisProxy.Heal();
                    break;
            }

            Record(new HistoryEvent { Kind = "healed", Fault = kind.ToString(), Node = target, At = _clock.Elapsed });
            await Task.Delay(gap, CancellationToken.None);
        }

        return (redis, _clock.Elapsed);
    }

    private static async Task SignalAsync(string signal, IReadOnlyList<int> pids)
    {
        if (pids.Count == 0)
        {
            return;
        }

        using var kill = Process.Start("kill", [signal, .. pids.Select(p => p.ToString(CultureInfo.InvariantCulture))]);
        await kill.WaitForExitAsync();
    }

    // ---- checker ----

    private FaultReport Check(CountingUpstream upstream, TimeSpan faultsEnded)
    {
        var violations = new List<string>();
        var events = _history.ToList();
        var requests = events.Where(e => e.Kind is "request" or "mismatch").ToList();
        var budget = _run.PromisedLease + _run.RetryBudget;
        var duplicates = 0;
        foreach (var group in requests.Where(e => e.Kind == "request").GroupBy(e => e.Key!))
        {
            var executions = upstream.Completed(group.Key);
            var successes = group.Where(e => e.Status is >= 200 and < 300).ToList();
            if (executions > 1)
            {
                duplicates++;
                violations.Add($"key {group.Key}: executed {executions} times at the upstream");
            }

            if (successes.Count > 0 && executions != 1)
            {
                violations.Add($"key {group.Key}: clients saw 2xx but the upstream completed it {executions} times");
            }

            if (successes.Select(e => e.BodySha).Distinct().Count() > 1)
            {
                violations.Add($"key {group.Key}: 2xx answers with {successes.Select(e => e.BodySha).Distinct().Count()} different bodies");
            }
        }

        foreach (var e in requests.Where(e => e.Status >= 500 && (e.Status != 503 || !e.RetryAfter)))
        {
            violations.Add($"key {e.Key}: {e.Status}{(e.RetryAfter ? "" : " without Retry-After")} at {e.At.TotalSeconds:F1} s");
        }

        foreach (var group in requests.Where(e => e.Kind == "mismatch").GroupBy(e => e.Key!))
        {
            var final = group.LastOrDefault(e => e.Status is not null && e.Status != 409 && e.Status != 503 && e.Status != 429);
            if (final is not null && final.Status != 422)
            {
                violations.Add($"key {group.Key}: another body got {final.Status}, not 422");
            }
        }

        foreach (var e in events.Where(e => e.Kind is "gave-up" or "mismatch-gave-up"))
        {
            violations.Add($"key {e.Key}: no final answer for client {e.Client} (gave up at {e.At.TotalSeconds:F1} s)");
        }

        // After the faults stop, every key reaches a final answer within one lease plus the retry budget.
        var longest = TimeSpan.Zero;
        foreach (var group in requests.GroupBy(e => (e.Client, e.Key)))
        {
            var final = group.Where(e => e.Status is >= 200 and < 300 || (e.Status is >= 400 and < 500 && e.Status != 409 && e.Status != 429)).Select(e => e.Done).FirstOrDefault();
            if (final is { } done && done - faultsEnded > budget)
            {
                violations.Add($"key {group.Key.Key}: final answer {(done - faultsEnded).TotalSeconds:F1} s after the faults stopped (budget {budget.TotalSeconds} s)");
            }

            var first = group.Min(e => e.At);
            if (final is { } end && end - first > longest)
            {
                longest = end - first;
            }
        }

        // What the gateways logged: completions retried (events 2004/2005) and anything at Error or above, kept with the
        // history of a failed run (an unexplained 5xx or a wedge is read from here: the last 300, nearest the end of the run).
        var logLines = _killedNodeLogs.Concat(_nodes.Where(n => n is not null).Select(n => n!.Logs))
            .SelectMany(l => l.Split('\n')).ToList();
        var retriedStored = logLines.Count(l => l.Contains("\"EventId\":2004", StringComparison.Ordinal) && l.Contains("stored: True", StringComparison.Ordinal));
        var abandoned = logLines.Count(l => l.Contains("\"EventId\":2005", StringComparison.Ordinal));
        var errorLines = logLines.Where(l => l.Contains("\"LogLevel\":\"Error\"", StringComparison.Ordinal) || l.Contains("\"LogLevel\":\"Critical\"", StringComparison.Ordinal)).TakeLast(300).ToList();
        var keysForwardedTwice = _run.UpstreamHonoursKey ? upstream.ArrivedOperations.Count(op => upstream.Arrived(op) > 1 && upstream.Completed(op) >= 1) : 0;

        var summary = string.Create(CultureInfo.InvariantCulture,
            $"seed {_run.Seed}, store {_run.Store}{(_run.UpstreamHonoursKey ? " (upstream honours the forwarded key)" : "")}, lease {_run.Lease.TotalSeconds} s: {requests.Count} requests, {requests.Count(e => e.Status is >= 200 and < 300)} 2xx, {requests.Count(e => e.Status == 503)} 503, {requests.Count(e => e.Status == 409)} 409, {requests.Count(e => e.Status == 422)} 422, {requests.Count(e => e.Error is not null)} connection errors, {duplicates} duplicates; faults {string.Join(", ", _injected.OrderBy(p => p.Key).Select(p => $"{p.Key}×{p.Value}"))}; longest time to a final answer {longest.TotalSeconds:F1} s; completions retried and stored {retriedStored}, abandoned {abandoned}{(_run.UpstreamHonoursKey ? $"; keys forwarded again after a lost completion and answered by the upstream's own Idem {keysForwardedTwice}" : "")}; {violations.Count} violations");
        string? path = null;
        if (violations.Count > 0)
        {
            var dir = Path.Combine(Path.GetTempPath(), "idem-faults");
            Directory.CreateDirectory(dir);
            path = Path.Combine(dir, $"history-seed{_run.Seed}-{_run.Store}-{Guid.NewGuid().ToString("N")[..6]}.jsonl");
            File.WriteAllLines(path, [summary, .. violations.Select(v => "# " + v), .. events.OrderBy(e => e.At).Select(e => JsonSerializer.Serialize(e)), "# gateway log lines at Error and above:", .. errorLines]);
        }

        return new FaultReport(_run.Seed, violations, path, summary);
    }

    private void Record(HistoryEvent e) => _history.Enqueue(e);

    private sealed record HistoryEvent
    {
        public required string Kind { get; init; }

        public int Client { get; init; }

        public string? Key { get; init; }

        public int Attempt { get; init; }

        public int Node { get; init; }

        public TimeSpan At { get; init; }

        public TimeSpan? Done { get; init; }

        public int? Status { get; init; }

        public string? BodySha { get; init; }

        public bool RetryAfter { get; init; }

        public string? Error { get; init; }

        public string? Fault { get; init; }
    }
}
