using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Idem.Benchmarks.Driver;

/// <summary>One measured (or skipped) case: the one layout results.json and results.md are both written from.</summary>
internal sealed record CaseResult
{
    public required string Name { get; init; }

    public required string Store { get; init; }

    public required string Traffic { get; init; }

    public bool Pinned { get; init; }

    public bool LocalCache { get; init; }

    /// <summary>Why the case was not measured; <see langword="null"/> when it was.</summary>
    public string? Skipped { get; init; }

    public int Attempt { get; init; } = 1;

    public long Requests { get; init; }

    public double Rps { get; init; }

    public double P50Ms { get; init; }

    public double P99Ms { get; init; }

    public long Errors { get; init; }

    /// <summary>How often the handler ran during the timed run (replays: 0; new keys: one per request).</summary>
    public long HandlerRuns { get; init; }

    /// <summary>The server's CPU time (utime + stime from /proc) over the timed run, per request.</summary>
    public double CpuMicrosecondsPerRequest { get; init; }

    public double AllocatedBytesPerRequest { get; init; }

    public double ThreadPoolItemsPerRequest { get; init; }

    public double ExceptionsPerRequest { get; init; }

    public string Collections { get; init; } = "";

    public double GcPauseMs { get; init; }

    public long JitMethods { get; init; }

    /// <summary>Warm-up added after <c>WARMUP</c> until the JIT settled (see <c>JIT_SETTLE</c>).</summary>
    public double ExtraWarmupSeconds { get; init; }

    /// <summary>req/s of the bare server kept running, right before and right after the timed run (pinned cases).</summary>
    public double? BracketBefore { get; init; }

    public double? BracketAfter { get; init; }

    /// <summary>Throughput over the brackets' mean, or over the bare mean when not bracketed (set once the run is over).</summary>
    public double RatioToBare { get; set; }

    public List<Verdict> Verdicts { get; init; } = [];

    [JsonIgnore]
    public bool Bracketed => BracketBefore > 0 && BracketAfter > 0;

    public static CaseResult Skip(HttpCase @case, string why) =>
        new() { Name = @case.Name, Store = @case.Store, Traffic = @case.Traffic.ToString().ToLowerInvariant(), LocalCache = @case.LocalCache, Skipped = why };
}

internal sealed record Verdict(string Target, bool? Met);

internal sealed record HttpRun
{
    public required string Started { get; init; }

    public required string Commit { get; init; }

    public required string Sdk { get; init; }

    public required int Cpus { get; init; }

    public required string Pinning { get; init; }

    public required string Wrk { get; init; }

    public required string Runtime { get; init; }

    public required string LoadBefore { get; init; }

    public string LoadAfter { get; set; } = "";

    public string Bracket { get; init; } = "";

    public double BareMean { get; set; }

    public List<double> BareRuns { get; init; } = [];

    public List<CaseResult> Cases { get; init; } = [];

    /// <summary>Attempts measured again because their bare brackets disagreed.</summary>
    public List<string> Remeasured { get; init; } = [];

    public double BracketTolerancePercent { get; init; }
}

internal static class HttpReport
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <summary>Ratios and verdicts, computed once from the measured numbers; both files are written from the result.</summary>
    public static void Judge(HttpRun run, IReadOnlyDictionary<string, HttpCase> cases)
    {
        var bare = run.Cases.Where(c => c.Store == "none" && c.Skipped is null).Select(c => c.Rps).ToList();
        run.BareRuns.AddRange(bare);
        run.BareMean = bare.Count > 0 ? bare.Average() : 0;
        CaseResult? Find(string name) => run.Cases.LastOrDefault(c => c.Name == name);
        foreach (var result in run.Cases.Where(c => c.Skipped is null))
        {
            result.RatioToBare = result.Bracketed
                ? result.Rps / ((result.BracketBefore!.Value + result.BracketAfter!.Value) / 2)
                : run.BareMean > 0 ? result.Rps / run.BareMean : 0;
            if (cases.TryGetValue(result.Name, out var @case))
            {
                foreach (var target in @case.Targets)
                {
                    result.Verdicts.Add(new Verdict(target.Describe(), target.Judge(result, Find)));
                }
            }
        }
    }

    public static async Task WriteAsync(HttpRun run, IReadOnlyDictionary<string, HttpCase> cases, string jsonPath, string markdownPath)
    {
        await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(run, Json) + "\n");
        var kept = File.Exists(markdownPath) ? OtherScriptsSections(await File.ReadAllTextAsync(markdownPath)) : string.Empty;
        await File.WriteAllTextAsync(markdownPath, Markdown(run, cases) + kept);
    }

    // Other scripts write their own sections into results.md between markers (joined.sh: "<!-- joined-transaction:
    // written by benchmarks/joined.sh -->" … "<!-- /joined-transaction -->"). A run of run.sh rewrites the file, so it
    // carries those sections over unchanged instead of dropping them.
    internal static string OtherScriptsSections(string markdown)
    {
        var kept = new StringBuilder();
        foreach (System.Text.RegularExpressions.Match section in System.Text.RegularExpressions.Regex.Matches(
            markdown, @"<!-- (?<name>[a-z0-9-]+): written by [^>]*-->.*?<!-- /\k<name> -->", System.Text.RegularExpressions.RegexOptions.Singleline))
        {
            kept.Append('\n').Append(section.Value).Append('\n');
        }

        return kept.ToString();
    }

    public static string Markdown(HttpRun run, IReadOnlyDictionary<string, HttpCase> cases)
    {
        var md = new StringBuilder();
        void Line(string text = "") => md.Append(text).Append('\n');
        string F(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);

        Line("# Idem HTTP benchmark results");
        Line();
        Line($"Run {run.Started}, commit {run.Commit}, .NET SDK {run.Sdk}, {run.Cpus} CPUs, {run.Pinning}, {run.Wrk}, server GC, {run.Runtime}.");
        Line($"Load average before/after: {run.LoadBefore} / {run.LoadAfter} (the box is shared: read the ratios, not the absolute numbers).");
        Line("Written by `benchmarks/run.sh` (Idem.Benchmarks.Driver) with `results.json`, which holds the same numbers.");
        Line();
        if (run.BareRuns.Count > 0)
        {
            var spread = 100 * (run.BareRuns.Max() - run.BareRuns.Min()) / run.BareMean;
            Line($"Bare baseline: mean **{F(run.BareMean, "0")} req/s** over {run.BareRuns.Count} interleaved runs ({string.Join(", ", run.BareRuns.Select(r => F(r, "0")))}); spread (max-min)/mean = {F(spread, "0.0")}%.");
        }

        Line();
        Line("| case | req/s | p50 ms | p99 ms | bare alongside, req/s | ratio to bare | target | pass/fail | handler runs / requests |");
        Line("|---|---:|---:|---:|---:|---:|---|---|---|");
        foreach (var result in run.Cases)
        {
            var bareTargets = cases.TryGetValue(result.Name, out var @case) ? @case.Targets.Where(t => t is not NearDriver).ToList() : [];
            var targetText = bareTargets.Count == 0 ? "—" : string.Join("; ", bareTargets.Select(t => t.Describe()));
            if (result.Skipped is not null)
            {
                Line($"| {result.Name} | — | — | — | — | — | {targetText} | skipped: {result.Skipped} | — |");
                continue;
            }

            var verdict = bareTargets.Count == 0 ? "—" : result.Verdicts.Where(v => bareTargets.Any(t => t.Describe() == v.Target)).All(v => v.Met == true) ? "pass" : "FAIL";
            var bad = Correctness(result);
            if (bad.Length > 0)
            {
                verdict = "FAIL:" + bad;
            }

            var alongside = result.Bracketed ? $"{F(result.BracketBefore!.Value, "0")} / {F(result.BracketAfter!.Value, "0")}" : "—";
            Line($"| {result.Name} | {F(result.Rps, "0")} | {F(result.P50Ms, "0.00")} | {F(result.P99Ms, "0.00")} | {alongside} | {F(result.RatioToBare, "0.00")} | {targetText} | {verdict} | {result.HandlerRuns} / {result.Requests} |");
        }

        if (run.Cases.Any(c => c.Bracketed))
        {
            Line();
            Line($"*bare alongside*: a bare server kept running for the whole run, measured for {run.Bracket} right before and right after");
            Line("the case's timed run (same pinning, same traffic). Cases with it are judged against the mean of those two; the others");
            Line("(bare rows, PostgreSQL, Redis, tiered and their driver baselines) against the bare mean above.");
        }

        var drivers = run.Cases.Where(c => c.Skipped is null && cases.TryGetValue(c.Name, out var k) && k.Targets.Any(t => t is NearDriver)).ToList();
        if (drivers.Count > 0)
        {
            Line();
            Line("## Against the driver doing the same round trips");
            Line();
            Line("Each Idem store case beside its driver-limit baseline from the same run, at the same concurrency, pinning and");
            Line("servers: `npgsql` = Npgsql alone running the PostgreSQL store's own claim and complete statements (a replay: the");
            Line("claim statement alone); `seredis` = StackExchange.Redis alone running the Redis store's scripts; `tiered-raw` = the");
            Line("tiered store's round trips (Redis read, PostgreSQL claim and complete, Redis cache write). CPU is the server");
            Line("process's utime + stime from /proc over the timed run; allocations from `GC.GetTotalAllocatedBytes`.");
            Line();
            Line("| case | baseline | req/s case / baseline | ratio | p50 ms case / baseline | p99 ms case / baseline | CPU µs/request case / baseline | extra CPU µs | allocated KB/request case / baseline | target | pass/fail |");
            Line("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
            foreach (var result in drivers)
            {
                foreach (var target in cases[result.Name].Targets.OfType<NearDriver>())
                {
                    var baseline = run.Cases.LastOrDefault(c => c.Name == target.Baseline);
                    var verdict = result.Verdicts.FirstOrDefault(v => v.Target == target.Describe())?.Met;
                    if (baseline is null || baseline.Skipped is not null)
                    {
                        Line($"| {result.Name} | {target.Baseline} | — | — | — | — | — | — | — | {target.Describe()} | baseline not measured |");
                        continue;
                    }

                    Line($"| {result.Name} | {target.Baseline} | {F(result.Rps, "0")} / {F(baseline.Rps, "0")} | {F(result.Rps / baseline.Rps, "0.00")} "
                        + $"| {F(result.P50Ms, "0.00")} / {F(baseline.P50Ms, "0.00")} | {F(result.P99Ms, "0.00")} / {F(baseline.P99Ms, "0.00")} "
                        + $"| {F(result.CpuMicrosecondsPerRequest, "0.0")} / {F(baseline.CpuMicrosecondsPerRequest, "0.0")} | {F(result.CpuMicrosecondsPerRequest - baseline.CpuMicrosecondsPerRequest, "+0.0;-0.0")} "
                        + $"| {F(result.AllocatedBytesPerRequest / 1024, "0.00")} / {F(baseline.AllocatedBytesPerRequest / 1024, "0.00")} | {target.Describe()} | {(verdict == true ? "pass" : "FAIL")} |");
                }
            }
        }

        Line();
        Line("Server-side diagnostics over the timed run: CPU from /proc/PID/stat (utime + stime), the rest from GET /stats");
        Line("(GC.GetTotalAllocatedBytes, GC.CollectionCount, GC.GetTotalPauseDuration, ThreadPool.CompletedWorkItemCount,");
        Line("first-chance exceptions). CPU µs/request is the least noise-sensitive number here: it does not depend on how much");
        Line("CPU the box gave us.");
        Line();
        Line("JIT methods = methods compiled during the timed run (JitInfo); hundreds mean the warm-up did not finish tiering");
        Line("and CPU µs/request includes JIT time. extra warm-up s = warm-up added after WARMUP until the server compiled at most");
        Line("JIT_SETTLE methods in 5 s (bounded by WARMUP_MAX).");
        Line();
        Line("| case | CPU µs/request | allocated KB/request | thread-pool items/request | exceptions/request | GCs gen0/1/2 | GC pause ms | JIT methods | extra warm-up s |");
        Line("|---|---:|---:|---:|---:|---|---:|---:|---:|");
        foreach (var result in run.Cases.Where(c => c.Skipped is null && c.Requests > 0))
        {
            Line($"| {result.Name} | {F(result.CpuMicrosecondsPerRequest, "0.0")} | {F(result.AllocatedBytesPerRequest / 1024, "0.00")} | {F(result.ThreadPoolItemsPerRequest, "0.00")} | {F(result.ExceptionsPerRequest, "0.000")} | {result.Collections} | {F(result.GcPauseMs, "0")} | {result.JitMethods} | {F(result.ExtraWarmupSeconds, "0")} |");
        }

        Line();
        Line("Cases: *bare* = same handler without Idem (new key header sent, ignored); *-new* = a unique Idempotency-Key per");
        Line("request (claim + handler + complete); *-replay* = one key seeded before timing, every timed request is a replay;");
        Line("*-cached-replay* = the same with `WithLocalReplayCache()` in front of the store (served from the node's memory).");
        Line("Ratios are against the bare runs alongside, or else the mean bare rate above. p50/p99 come from wrk's latency histogram (its done() callback).");
        if (run.Remeasured.Count > 0)
        {
            Line();
            Line($"Measured again because the bare runs bracketing them differed by more than {F(run.BracketTolerancePercent, "0")} % (the box changed");
            Line("speed during the case; the table shows the attempt whose brackets agreed, or the last one):");
            Line();
            foreach (var line in run.Remeasured)
            {
                Line(line);
            }
        }

        return md.ToString();
    }

    /// <summary>
    /// Correctness rides along: every response 2xx, replays never run the handler, new keys run it once each (the
    /// handler count may exceed wrk's request count by the requests in flight when wrk stops).
    /// </summary>
    public static string Correctness(CaseResult result)
    {
        var bad = "";
        if (result.Errors > 0)
        {
            bad += $" {result.Errors} errors/non-2xx;";
        }

        if (result.Traffic == "replay" && result.HandlerRuns != 0)
        {
            bad += " replay ran the handler;";
        }

        if (result.Traffic == "new" && (result.HandlerRuns < result.Requests || result.HandlerRuns > result.Requests + 4096))
        {
            bad += " handler runs != requests;";
        }

        return bad;
    }
}
