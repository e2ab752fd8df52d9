namespace Idem.Benchmarks.Driver;

/// <summary>The traffic of a case: a unique key per request, or one key seeded before timing and replayed.</summary>
internal enum Traffic
{
    New,
    Replay,
}

/// <summary>
/// One case of the HTTP benchmark: a server (<c>--store</c> of Idem.Benchmarks.Server), its traffic and its targets.
/// </summary>
/// <param name="Name">The case's name in results and in <c>CASES</c>.</param>
/// <param name="Store">The server's <c>--store</c>: none, memory, sqlite, postgres, redis, tiered, or a driver baseline.</param>
/// <param name="Traffic">New keys or replays.</param>
/// <param name="LocalCache">Whether the Idem store has <c>WithLocalReplayCache()</c> in front.</param>
/// <param name="Targets">What the case must meet.</param>
internal sealed record HttpCase(string Name, string Store, Traffic Traffic, bool LocalCache, IReadOnlyList<Target> Targets)
{
    public HttpCase(string name, string store, Traffic traffic, params Target[] targets)
        : this(name, store, traffic, false, targets)
    {
    }

    public bool NeedsPostgres => Store is "postgres" or "npgsql" or "tiered" or "tiered-raw";

    public bool NeedsRedis => Store is "redis" or "seredis" or "tiered" or "tiered-raw";

    public bool IsBare => Store == "none";

    public bool IsDriverBaseline => Store is "npgsql" or "seredis" or "tiered-raw";

    /// <summary>
    /// Pinned cases run the server on SERVER_CPUS and wrk on WRK_CPUS and are bracketed by bare runs. Cases that talk to
    /// PostgreSQL or Redis are not: the database is a third CPU-hungry process, and with the server pinned to one core it
    /// would fight wrk for the other (README, "Pinning"). A replay from the local replay cache touches neither server
    /// once warmed up, so it is pinned and judged against bare alongside like the in-memory cases.
    /// </summary>
    public bool Pinned => Store is "none" or "memory" or "sqlite" || LocalCache;
}

/// <summary>What a case must meet. Each is judged on the run's own numbers.</summary>
internal abstract record Target
{
    public abstract string Describe();

    /// <returns>The verdict, or <see langword="null"/> when what it needs was not measured (a skipped baseline).</returns>
    public abstract bool? Judge(CaseResult result, Func<string, CaseResult?> find);
}

/// <summary>Throughput at least <paramref name="Min"/> × bare (alongside when bracketed, else the bare mean).</summary>
internal sealed record RatioToBare(double Min) : Target
{
    public override string Describe() => $"≥ {Min:0.00}× bare";

    public override bool? Judge(CaseResult result, Func<string, CaseResult?> find) => result.RatioToBare >= Min;
}

/// <summary>An absolute throughput (the PostgreSQL targets of issue 3).</summary>
internal sealed record MinRps(double Rps) : Target
{
    public override string Describe() => $"≥ {Rps:0} req/s";

    public override bool? Judge(CaseResult result, Func<string, CaseResult?> find) => result.Rps >= Rps;
}

/// <summary>
/// Within reach of the driver doing the same round trips (issue 21): throughput at least <paramref name="MinRatio"/> × the
/// baseline's, and the app's CPU per request at most the baseline's plus <paramref name="MaxExtraCpuMicroseconds"/>.
/// </summary>
internal sealed record NearDriver(string Baseline, double MinRatio, double MaxExtraCpuMicroseconds) : Target
{
    public override string Describe() => $"≥ {MinRatio:0.00}× {Baseline}, CPU ≤ +{MaxExtraCpuMicroseconds:0} µs";

    public override bool? Judge(CaseResult result, Func<string, CaseResult?> find) =>
        find(Baseline) is { Skipped: null } baseline
            ? result.Rps >= MinRatio * baseline.Rps && result.CpuMicrosecondsPerRequest <= baseline.CpuMicrosecondsPerRequest + MaxExtraCpuMicroseconds
            : null;
}

internal static class HttpCases
{
    /// <summary>The cases, in the order they run; bare-1..3 are measured before, between and after the others.</summary>
    public static IReadOnlyList<HttpCase> InMemory { get; } =
    [
        new("memory-new", "memory", Traffic.New, new RatioToBare(0.75)),
        new("memory-replay", "memory", Traffic.Replay, new RatioToBare(0.85)),
    ];

    public static IReadOnlyList<HttpCase> Sqlite { get; } =
    [
        new("sqlite-new", "sqlite", Traffic.New, new RatioToBare(0.20)),
        new("sqlite-replay", "sqlite", Traffic.Replay),
    ];

    // Each Idem case right beside its driver baseline: the closer in time, the less the box moved between them.
    public static IReadOnlyList<HttpCase> Postgres { get; } =
    [
        new("postgres-new", "postgres", Traffic.New, new MinRps(6000), new NearDriver("npgsql-new", 0.85, 25)),
        new("npgsql-new", "npgsql", Traffic.New),
        new("postgres-replay", "postgres", Traffic.Replay, new MinRps(15000), new NearDriver("npgsql-replay", 0.85, 25)),
        new("npgsql-replay", "npgsql", Traffic.Replay),
        new("postgres-cached-replay", "postgres", Traffic.Replay, true, [new RatioToBare(0.95)]),
    ];

    public static IReadOnlyList<HttpCase> Redis { get; } =
    [
        new("redis-new", "redis", Traffic.New, new NearDriver("seredis-new", 0.85, 25)),
        new("seredis-new", "seredis", Traffic.New),
        new("redis-replay", "redis", Traffic.Replay, new NearDriver("seredis-replay", 0.85, 25)),
        new("seredis-replay", "seredis", Traffic.Replay),
        new("redis-cached-replay", "redis", Traffic.Replay, true, [new RatioToBare(0.95)]),
    ];

    public static IReadOnlyList<HttpCase> Tiered { get; } =
    [
        new("tiered-new", "tiered", Traffic.New, new NearDriver("tiered-raw-new", 0.85, 25)),
        new("tiered-raw-new", "tiered-raw", Traffic.New),
        new("tiered-replay", "tiered", Traffic.Replay, new NearDriver("tiered-raw-replay", 0.85, 25)),
        new("tiered-raw-replay", "tiered-raw", Traffic.Replay),
        new("tiered-cached-replay", "tiered", Traffic.Replay, true, [new RatioToBare(0.95)]),
    ];

    public static HttpCase Bare(int n) => new($"bare-{n}", "none", Traffic.New);
}
