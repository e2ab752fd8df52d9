using System.Globalization;

namespace Idem.Benchmarks.Driver;

/// <summary>
/// The HTTP benchmark's settings, from the environment (the names run.sh has always read):
/// <c>DURATION</c> (10s), <c>WARMUP</c> (10s), <c>BRACKET</c> (5s, 0 = off), <c>BRACKET_TOLERANCE</c> (15, %),
/// <c>ATTEMPTS</c> (3), <c>THREADS</c> (2), <c>CONNECTIONS</c> (32), <c>PIN</c> (1), <c>SERVER_CPUS</c> (0),
/// <c>WRK_CPUS</c> (1), <c>CASES</c> (all), <c>TIERING</c> (fast), <c>TP_SPIN</c> (default),
/// <c>JIT_SETTLE</c> (50, methods per 5 s slice; 0 = off), <c>WARMUP_MAX</c> (60s),
/// <c>IDEM_BENCH_POSTGRES</c> and <c>IDEM_BENCH_REDIS</c> (a server to use, <c>off</c> to skip, unset to start one).
/// </summary>
internal sealed record HttpSettings(
    TimeSpan Duration,
    TimeSpan Warmup,
    TimeSpan Bracket,
    double BracketTolerancePercent,
    int Attempts,
    int Threads,
    int Connections,
    bool Pin,
    string ServerCpus,
    string WrkCpus,
    IReadOnlySet<string>? Cases,
    bool FastTiering,
    bool NoThreadPoolSpin,
    string? Postgres,
    string? Redis,
    int JitSettleMethods,
    TimeSpan WarmupMax)
{
    public static HttpSettings FromEnvironment()
    {
        var cases = Env("CASES", "");
        return new HttpSettings(
            Seconds("DURATION", "10s"),
            Seconds("WARMUP", "10s"),
            Seconds("BRACKET", "5s"),
            double.Parse(Env("BRACKET_TOLERANCE", "15"), CultureInfo.InvariantCulture),
            int.Parse(Env("ATTEMPTS", "3"), CultureInfo.InvariantCulture),
            int.Parse(Env("THREADS", "2"), CultureInfo.InvariantCulture),
            int.Parse(Env("CONNECTIONS", "32"), CultureInfo.InvariantCulture),
            Env("PIN", "1") == "1" && Environment.ProcessorCount >= 2,
            Env("SERVER_CPUS", "0"),
            Env("WRK_CPUS", "1"),
            cases.Length == 0 ? null : cases.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet(),
            Env("TIERING", "fast") == "fast",
            Env("TP_SPIN", "default") == "0",
            Environment.GetEnvironmentVariable("IDEM_BENCH_POSTGRES") is { Length: > 0 } pg ? pg : null,
            Environment.GetEnvironmentVariable("IDEM_BENCH_REDIS") is { Length: > 0 } redis ? redis : null,
            int.Parse(Env("JIT_SETTLE", "50"), CultureInfo.InvariantCulture),
            Seconds("WARMUP_MAX", "60s"));
    }

    public bool Wanted(string name) => Cases is null || Cases.Contains(name) || name.StartsWith("bare", StringComparison.Ordinal);

    /// <summary>The server's environment: server GC, and the tiering and spinning settings.</summary>
    public Dictionary<string, string> ServerEnvironment()
    {
        var environment = new Dictionary<string, string> { ["DOTNET_gcServer"] = "1" };
        if (FastTiering)
        {
            // Tiered compilation and dynamic PGO stay on; only the call-counting delay goes. Under a saturating load on one
            // pinned core that delay never runs out, and neither bare nor Idem code reached Tier 1 in a 10 s run (README).
            environment["DOTNET_TC_CallCountingDelayMs"] = "0";
        }

        if (NoThreadPoolSpin)
        {
            environment["DOTNET_ThreadPool_UnfairSemaphoreSpinLimit"] = "0";
        }

        return environment;
    }

    public string Describe() =>
        (FastTiering ? "tiered compilation and dynamic PGO on, DOTNET_TC_CallCountingDelayMs=0" : "tiered compilation and dynamic PGO at .NET defaults")
        + (NoThreadPoolSpin ? ", thread-pool spin limit 0" : "");

    private static string Env(string name, string fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } value ? value : fallback;

    private static TimeSpan Seconds(string name, string fallback)
    {
        var value = Env(name, fallback).TrimEnd('s');
        return double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds >= 0
            ? TimeSpan.FromSeconds(seconds)
            : throw new UsageException($"{name}={Env(name, fallback)}: expected seconds, e.g. 10s");
    }
}
