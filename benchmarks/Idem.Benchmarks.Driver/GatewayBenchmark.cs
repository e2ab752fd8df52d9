using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Idem.Benchmarks.Driver;

/// <summary>
/// gateway.sh's arguments: seconds per case and round (8), connections (32), rounds (3); from the environment WARMUP (6),
/// then, as run.sh, warming up in 5 s slices until the proxy's tiered-compilation thread used at most JIT_SETTLE_MS (100)
/// ms of CPU in a slice (0 = off), at most WARMUP_MAX (60) seconds more.
/// </summary>
internal sealed record GatewaySettings(int Seconds, int Connections, int Rounds, int WarmupSeconds, int JitSettleMilliseconds = 100, int WarmupMaxSeconds = 60)
{
    public const int Threads = 2;

    public static GatewaySettings FromArguments(string[] args)
    {
        int At(int index, int fallback) =>
            index < args.Length ? (int.TryParse(args[index], CultureInfo.InvariantCulture, out var value) && value > 0 ? value : throw new UsageException($"gateway: '{args[index]}' is not a positive number")) : fallback;
        static int Env(string name, int fallback) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? int.Parse(v.TrimEnd('s'), CultureInfo.InvariantCulture) : fallback;
        return new GatewaySettings(At(0, 8), At(1, 32), At(2, 3), Env("WARMUP", 6), Env("JIT_SETTLE_MS", 100), Env("WARMUP_MAX", 60));
    }
}

/// <summary>One gateway case: a proxy, its traffic and its target as a ratio to plain YARP (null: a reference row).</summary>
internal sealed record GatewayCase(string Name, string Label, Traffic Traffic, double? Target);

internal sealed record GatewayResult
{
    public required string Name { get; init; }

    public required string Label { get; init; }

    public double? Target { get; init; }

    public List<double> Rounds { get; init; } = [];

    public double Rps { get; set; }

    public double P50Ms { get; set; }

    public double P99Ms { get; set; }

    public long Requests { get; set; }

    public long CpuMicroseconds { get; set; }

    public double CpuMicrosecondsPerRequest => Requests > 0 ? (double)CpuMicroseconds / Requests : 0;

    public double? RatioToYarp { get; set; }

    public bool? Met { get; set; }

    public string? Note { get; set; }

    /// <summary>Warm-up added after WARMUP until the proxy's tiered compilation settled (see JIT_SETTLE_MS).</summary>
    public int ExtraWarmupSeconds { get; set; }
}

internal sealed record GatewayRun
{
    public required string Started { get; init; }

    public required string Machine { get; init; }

    public required string Wrk { get; init; }

    public string LoadAfter { get; set; } = "";

    public int JitSettleMilliseconds { get; init; }

    public List<GatewayResult> Cases { get; init; } = [];
}

/// <summary>
/// Idem Gateway against plain YARP on the same upstream, in one run, with wrk. Every proxy runs for the whole benchmark;
/// the cases take turns, round after round, so that load from other work on the machine spreads over all of them instead
/// of landing on one. Each case's figure is its median round. Writes benchmarks/gateway-results.md and .json.
/// </summary>
internal sealed class GatewayBenchmark(Repository repository, GatewaySettings settings, ProcessSet processes)
{
    // Targets of issue 21 item 4 (issue 3 asked 0.8× in memory and 0.5× on SQLite).
    private static readonly GatewayCase[] Cases =
    [
        new("plain", "plain YARP (new keys, ignored)", Traffic.New, null),
        new("off", "Idem Gateway, protection off (plumbing only)", Traffic.New, null),
        new("memory", "Idem Gateway, in-memory, new keys", Traffic.New, 0.85),
        new("sqlite", "Idem Gateway, SQLite, new keys", Traffic.New, 0.55),
        new("replay", "Idem Gateway, replay (one key)", Traffic.Replay, 1.0),
    ];

    private static readonly JsonSerializerOptions JsonOptions = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    private const string Body = "{\"amount\":42,\"currency\":\"EUR\"}";

    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(10) };

    public async Task RunAsync()
    {
        var work = Directory.CreateTempSubdirectory("idem-gateway-bench.").FullName;
        File.SetUnixFileMode(work, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute); // PostgreSQL runs as its own user
        var started = new List<Process>();
        try
        {
            await RunInAsync(work, started);
        }
        finally
        {
            foreach (var process in started)
            {
                await processes.StopAsync(process);
            }

            Directory.Delete(work, recursive: true);
        }
    }

    private async Task RunInAsync(string work, List<Process> started)
    {
        Log("building (Release)");
        await repository.BuildAsync("src/Idem.Gateway/Idem.Gateway.csproj", Path.Combine(work, "build.log"));
        await repository.BuildAsync("benchmarks/Idem.Gateway.Bench/Idem.Gateway.Bench.csproj", Path.Combine(work, "build.log"));
        var gateway = repository.Output("src/Idem.Gateway", "Idem.Gateway.dll");
        var bench = repository.Output("benchmarks/Idem.Gateway.Bench", "Idem.Gateway.Bench.dll");

        // As in run.sh: methods are promoted to optimised code as soon as they are hot, so the warm-up is enough for every
        // process (the default 100 ms call-counting delay keeps restarting while a server is busy).
        var environment = new Dictionary<string, string> { ["DOTNET_TC_CallCountingDelayMs"] = "0" };
        async Task<(Process Process, string Url)?> StartAsync(string name, string ready, params string[] arguments)
        {
            var port = Ports.Free();
            var url = $"http://127.0.0.1:{port}";
            var process = processes.Start("dotnet", [.. arguments, "--urls", url], Path.Combine(work, name + ".log"), environment);
            started.Add(process);
            if (await Ports.WaitReadyAsync(_http, url + ready, process))
            {
                return (process, url);
            }

            Log($"{name} did not start: {Tail(await File.ReadAllTextAsync(Path.Combine(work, name + ".log")))}");
            started.Remove(process);
            await processes.StopAsync(process);
            return null;
        }

        var upstream = await StartAsync("upstream", "/count", bench, "upstream") ?? throw new UsageException("upstream did not start");
        string[] gatewayArgs = [gateway, "--upstream", upstream.Url, "--Logging:LogLevel:Default=Warning"];
        var proxies = new Dictionary<string, (Process Process, string Url)>
        {
            ["plain"] = await StartAsync("yarp", "/", bench, "yarp", upstream.Url) ?? throw new UsageException("plain YARP did not start"),
            ["memory"] = await StartAsync("idem-memory", "/", [.. gatewayArgs, "--Idem:Store=InMemory"]) ?? throw new UsageException("the gateway did not start"),
            ["off"] = await StartAsync("idem-off", "/", [.. gatewayArgs, "--Idem:Store=InMemory", "--Idem:Default:Enabled=false"]) ?? throw new UsageException("the gateway did not start"),
        };
        proxies["replay"] = proxies["memory"];
        var results = Cases.ToDictionary(c => c.Name, c => new GatewayResult { Name = c.Name, Label = c.Label, Target = c.Target });
        if (await StartAsync("idem-sqlite", "/", [.. gatewayArgs, "--Idem:Store=Sqlite", $"--Idem:Sqlite:Path={Path.Combine(work, "idem.db")}"]) is { } sqlite)
        {
            proxies["sqlite"] = sqlite;
        }
        else
        {
            results["sqlite"].Note = "the SQLite gateway did not start";
        }

        using (var seed = new HttpRequestMessage(HttpMethod.Post, proxies["replay"].Url + "/orders") { Content = HttpBenchmark.Json(Body) })
        {
            seed.Headers.Add("Idempotency-Key", "replay-key");
            using var _ = await _http.SendAsync(seed);
        }

        var wrk = new Wrk(repository.Benchmarks, GatewaySettings.Threads, settings.Connections, null);
        var measured = Cases.Where(c => proxies.ContainsKey(c.Name)).ToList();
        string Seed(GatewayCase c) => c.Traffic == Traffic.Replay ? "replay-key" : $"run-{Stopwatch.GetTimestamp()}";
        string Mode(GatewayCase c) => c.Traffic == Traffic.Replay ? "replay" : "new";

        // Warm-up at full load: tiered compilation must reach its final code in every proxy before timing, or the proxy
        // with more code (Idem's) is measured partly on instrumented code while plain YARP already runs optimised.
        // On a loaded box a few seconds are not enough: Idem Gateway has ~1,000 more methods to promote than plain YARP
        // (2026-12-07, load ~70: 1,365 methods compiled in its first timed round after 6 s, 576 in the second, against
        // 962 and 44), so the proxy with more code was measured partly while its tiering thread still worked. As run.sh
        // does (JIT_SETTLE), each proxy keeps warming up until its tiered-compilation thread is nearly idle.
        var warmed = new HashSet<int>();
        foreach (var c in measured)
        {
            var proxy = proxies[c.Name];
            await wrk.RunAsync(proxy.Url, Mode(c), Seed(c), TimeSpan.FromSeconds(settings.WarmupSeconds), latency: false, body: Body);
            if (settings.JitSettleMilliseconds <= 0 || !warmed.Add(proxy.Process.Id))
            {
                continue; // the replay case shares the in-memory proxy, settled once
            }

            var extra = 0;
            while (extra < settings.WarmupMaxSeconds)
            {
                var before = ProcessCpu.TieringMicroseconds(proxy.Process.Id);
                await wrk.RunAsync(proxy.Url, Mode(c), Seed(c), TimeSpan.FromSeconds(5), latency: false, body: Body);
                extra += 5;
                if (ProcessCpu.TieringMicroseconds(proxy.Process.Id) - before <= settings.JitSettleMilliseconds * 1000L)
                {
                    break;
                }
            }

            results[c.Name].ExtraWarmupSeconds = extra;
            Log($"{c.Name}: warm-up {settings.WarmupSeconds} s + {extra} s until the JIT settled");
        }

        var rounds = new Dictionary<string, List<WrkResult>>();
        for (var round = 1; round <= settings.Rounds; round++)
        {
            foreach (var c in measured)
            {
                var proxy = proxies[c.Name];
                // The proxy's own CPU time: per request it does not depend on how much CPU the shared box gave the run.
                var before = ProcessCpu.Microseconds(proxy.Process.Id);
                var (result, output) = await wrk.RunAsync(proxy.Url, Mode(c), Seed(c), TimeSpan.FromSeconds(settings.Seconds), body: Body);
                var cpu = ProcessCpu.Microseconds(proxy.Process.Id) - before;
                if (result is null)
                {
                    Log($"round {round}, {c.Name}: wrk printed no result: {Tail(output)}");
                    continue;
                }

                var r = results[c.Name];
                r.CpuMicroseconds += cpu;
                r.Requests += result.Requests;
                r.Rounds.Add(Math.Round(result.Rps));
                (rounds.TryGetValue(c.Name, out var list) ? list : rounds[c.Name] = []).Add(result);
                if (result.Errors > 0)
                {
                    r.Note = $"{result.Errors} errors/non-2xx in round {round}";
                }

                Log($"round {round}, {c.Name}: {result.Rps:0} req/s");
            }
        }

        foreach (var (name, list) in rounds)
        {
            var median = list.OrderBy(r => r.Rps).ElementAt((list.Count - 1) / 2);
            var r = results[name];
            r.Rps = Math.Round(median.Rps);
            r.P50Ms = median.P50Ms;
            r.P99Ms = median.P99Ms;
        }

        var plain = results["plain"].Rps;
        foreach (var r in results.Values.Where(r => r.Rps > 0 && plain > 0))
        {
            r.RatioToYarp = r.Rps / plain;
            r.Met = r.Target is { } target ? r.RatioToYarp >= target : null;
        }

        var run = new GatewayRun
        {
            Started = DateTimeOffset.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture),
            Machine = $"{Environment.ProcessorCount} cores ({CpuModel()}), .NET {(await Tool.RunAsync("dotnet", ["--version"])).Output.Trim()}",
            Wrk = $"wrk -t{GatewaySettings.Threads} -c{settings.Connections} -d{settings.Seconds}s per case and round, {settings.Rounds} interleaved rounds, median shown",
            LoadAfter = string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)),
            JitSettleMilliseconds = settings.JitSettleMilliseconds,
            Cases = [.. Cases.Select(c => results[c.Name])],
        };
        await File.WriteAllTextAsync(Path.Combine(repository.Benchmarks, "gateway-results.json"), JsonSerializer.Serialize(run, JsonOptions) + "\n");
        var markdown = Markdown(run);
        await File.WriteAllTextAsync(Path.Combine(repository.Benchmarks, "gateway-results.md"), markdown);
        Console.Write(markdown);
    }

    private static string Markdown(GatewayRun run)
    {
        var md = new StringBuilder();
        void Line(string text = "") => md.Append(text).Append('\n');
        string F(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);
        Line("# Idem Gateway vs plain YARP");
        Line();
        Line($"Run {run.Started} on {run.Machine}.");
        Line($"{run.Wrk}; POST /orders with a 30-byte JSON body; upstream, proxy and wrk share the machine (loopback).");
        Line(run.JitSettleMilliseconds > 0
            ? $"Each proxy warmed up until its tiered-compilation thread used at most {run.JitSettleMilliseconds} ms of CPU in 5 s (JIT_SETTLE_MS); extra warm-up in seconds: "
                + string.Join(", ", run.Cases.Where(c => c.ExtraWarmupSeconds > 0).Select(c => $"{c.Name} {c.ExtraWarmupSeconds}")) + "."
            : "No JIT settling (JIT_SETTLE_MS=0): the fixed warm-up only.");
        Line("Produced by `benchmarks/gateway.sh` (Idem.Benchmarks.Driver), with `gateway-results.json` holding the same numbers; numbers from one run, on a machine that other work may share.");
        Line();
        Line($"Load average when it ended: {run.LoadAfter}.");
        Line();
        Line("| Case | req/s (median) | rounds | p50 ms | p99 ms | proxy CPU µs/request | vs plain YARP | target | |");
        Line("|---|---:|---:|---:|---:|---:|---:|---:|---|");
        foreach (var r in run.Cases)
        {
            var verdict = r.Rps == 0 ? "not run" : r.Target is null ? "reference" : r.Met == true ? "met" : "missed";
            Line($"| {r.Label} | {(r.Rps > 0 ? F(r.Rps, "0") : "–")} | {(r.Rounds.Count > 0 ? string.Join('/', r.Rounds.Select(x => F(x, "0"))) : "–")} "
                + $"| {(r.Rps > 0 ? F(r.P50Ms, "0.00") : "–")} | {(r.Rps > 0 ? F(r.P99Ms, "0.00") : "–")} | {(r.Requests > 0 ? F(r.CpuMicrosecondsPerRequest, "0.0") : "–")} "
                + $"| {(r.RatioToYarp is { } ratio ? F(ratio, "0.00") + "×" : "n/a")} | {(r.Target is { } t ? F(t, "0.##") + "×" : "–")} | {verdict}{(r.Note is null ? "" : $" ({r.Note})")} |");
        }

        return md.ToString();
    }

    private static string CpuModel() =>
        File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU";

    private static string Tail(string text) => text.Length > 300 ? text[^300..] : text;

    private static void Log(string message) => Console.Error.WriteLine($"[gateway] {message}");
}
