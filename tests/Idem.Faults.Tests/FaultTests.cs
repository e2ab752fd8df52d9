using System.Globalization;
using Xunit.Abstractions;

namespace Idem.Faults.Tests;

/// <summary>
/// Short seeded fault schedules (CI): the shipped configuration must pass the checker, and deliberately broken
/// configurations, run under the same harness, must be caught. The seed is printed (and kept in the history file of a
/// failed run); <c>IDEM_FAULTS_SEED</c> replays one. benchmarks/faults.sh runs the long version, every fault kind with
/// an upstream that honours the forwarded key, and a broken build under each fault kind (<c>--broken-builds</c>).
/// </summary>
public sealed class FaultTests(ITestOutputHelper output)
{
    // Every store fault: PostgreSQL frozen, restarted, cut off or stalled, Redis killed, frozen or cut off. The gateways
    // run with the product's 10 s lease, longer than any fault the nemesis holds (at most 2.5 s), as a real deployment's
    // lease is longer than the store outages it rides out: a completion the store could not take is retried within the
    // lease (IdempotencyExecutor), so a retry finds the stored response. The upstream counts every completed forward.
    private static readonly FaultKind[] StoreKinds = Enum.GetValues<FaultKind>().Where(k => k != FaultKind.KillGateway).ToArray();

    /// <summary>
    /// The shipped configurations. CI runs the store faults; <c>IDEM_FAULTS_ALL=1</c> (benchmarks/faults.sh) adds every
    /// kind, gateway SIGKILLs included, against an upstream that honours the forwarded Idempotency-Key: a gateway killed
    /// after the upstream answered and before its completion was stored cannot be covered by the gateway itself, and an
    /// Idem-protected upstream is what covers it (README, "Proof under faults").
    /// </summary>
    public static TheoryData<string> ShippedRuns()
    {
        var runs = new TheoryData<string> { "store-faults" };
        if (Environment.GetEnvironmentVariable("IDEM_FAULTS_ALL") == "1")
        {
            runs.Add("every-fault-upstream-honours-key");
        }

        return runs;
    }

    [Theory]
    [MemberData(nameof(ShippedRuns))]
    public async Task Tiered_gateways_keep_every_promise_under_a_seeded_schedule_of_faults(string schedule)
    {
        var kinds = Environment.GetEnvironmentVariable("IDEM_FAULTS_KINDS") switch
        {
            null or "" or "all" => schedule == "store-faults" ? StoreKinds : Enum.GetValues<FaultKind>(),
            var list => list.Split(',').Select(Enum.Parse<FaultKind>).ToArray(),
        };
        var run = Configure(new FaultRun { Seed = Seed(), Kinds = kinds, UpstreamHonoursKey = schedule != "store-faults" });
        var report = await new FaultHarness(run).RunAsync();
        await RecordAsync($"shipped ({schedule})", report);

        Assert.True(report.Violations.Count == 0, $"{report.Summary}\nhistory: {report.HistoryPath}\n{string.Join('\n', report.Violations.Take(20))}");
    }

    /// <summary>
    /// A deliberately broken configuration for each fault kind, the one that kind must expose. CI runs three (one per
    /// kind of breakage); <c>IDEM_FAULTS_BROKEN=all</c> (benchmarks/faults.sh --broken-builds) runs one per fault kind.
    /// </summary>
    public static TheoryData<string, FaultKind> BrokenRuns()
    {
        var all = Environment.GetEnvironmentVariable("IDEM_FAULTS_BROKEN") == "all";
        var runs = new TheoryData<string, FaultKind>
        {
            // The tiered store claiming in Redis: a Redis kill loses the claims and the completed records, so retries run again.
            { "claims-in-Redis", FaultKind.KillRedis },
            // Fail-open: while PostgreSQL is frozen, requests pass through unprotected.
            { "fail-open", FaultKind.FreezePostgres },
            // The in-flight marker kept for the retention (no takeover within a lease): a killed node's keys never finish.
            { "lease-for-retention", FaultKind.KillGateway },
        };
        if (all)
        {
            runs.Add("fail-open", FaultKind.RestartPostgres);
            runs.Add("fail-open", FaultKind.DropPostgres);
            runs.Add("fail-open", FaultKind.StallPostgres);
            // Claims in Redis and fail-open: while Redis is frozen or cut off, requests pass through unprotected.
            runs.Add("claims-in-Redis-fail-open", FaultKind.FreezeRedis);
            runs.Add("claims-in-Redis-fail-open", FaultKind.DropRedis);
        }

        return runs;
    }

    [Theory]
    [MemberData(nameof(BrokenRuns))]
    public async Task A_broken_configuration_is_caught_by_the_checker(string broken, FaultKind kind)
    {
        // A freeze or a stall shorter than the store's command timeout (PostgreSQL 2 s, Redis 1 s) only delays the
        // claims, so fail-open never shows: those are held past it.
        var longHold = kind is FaultKind.FreezePostgres or FaultKind.StallPostgres ? (2600, 4000) : kind is FaultKind.FreezeRedis ? (1500, 3000) : (300, 2500);
        var failOpen = new[] { "--Idem:Default:StoreFailureMode", "FailOpen" };
        var run = broken switch
        {
            "claims-in-Redis" => new FaultRun { Seed = Seed(), Store = "Redis", Kinds = [kind] },
            "fail-open" => new FaultRun { Seed = Seed(), Kinds = [kind], HoldMs = longHold, GatewayArgs = failOpen },
            "lease-for-retention" => new FaultRun { Seed = Seed(), Kinds = [kind], Lease = TimeSpan.FromMinutes(10), RetryBudget = TimeSpan.FromSeconds(5) },
            "claims-in-Redis-fail-open" => new FaultRun { Seed = Seed(), Store = "Redis", Kinds = [kind], HoldMs = longHold, GatewayArgs = failOpen },
            _ => throw new ArgumentOutOfRangeException(nameof(broken)),
        } with { FaultDuration = TimeSpan.FromSeconds(12) };
        var report = await new FaultHarness(run).RunAsync();
        await RecordAsync($"broken ({broken}) under {kind}: {(report.Violations.Count > 0 ? "CAUGHT" : "MISSED")}", report);
        output.WriteLine(string.Join('\n', report.Violations.Take(5)));

        Assert.True(report.Violations.Count > 0, $"The checker missed the broken configuration '{broken}' under {kind}: {report.Summary}");
    }

    // benchmarks/faults.sh sets these for a long run; CI uses the defaults.
    private static FaultRun Configure(FaultRun run) => run with
    {
        // A lease shorter than the faults (for example 2 s) shows the window the lease covers: PromisedLease follows it.
        Lease = Int("IDEM_FAULTS_LEASE_SECONDS") is { } lease ? TimeSpan.FromSeconds(lease) : run.Lease,
        PromisedLease = Int("IDEM_FAULTS_LEASE_SECONDS") is { } promised ? TimeSpan.FromSeconds(promised) : run.PromisedLease,
        FaultDuration = TimeSpan.FromSeconds(Int("IDEM_FAULTS_SECONDS") ?? 15),
        Clients = Int("IDEM_FAULTS_CLIENTS") ?? run.Clients,
        UpstreamDelayMs = Int("IDEM_FAULTS_UPSTREAM_DELAY_MS") ?? run.UpstreamDelayMs,
    };

    private static int? Int(string name) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), CultureInfo.InvariantCulture, out var value) ? value : null;

    private async Task RecordAsync(string title, FaultReport report)
    {
        output.WriteLine(report.Summary);
        if (Environment.GetEnvironmentVariable("IDEM_FAULTS_REPORT") is { Length: > 0 } file)
        {
            await File.AppendAllLinesAsync(file, [$"{title}: {report.Summary}", .. report.Violations.Take(20).Select(v => "  " + v), "  history: " + (report.HistoryPath ?? "(kept only for failed runs)")]);
        }
    }

    private int Seed()
    {
        var seed = Int("IDEM_FAULTS_SEED") ?? Random.Shared.Next();
        output.WriteLine($"seed {seed} (replay with IDEM_FAULTS_SEED={seed})");
        return seed;
    }
}
