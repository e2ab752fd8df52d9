using System.Diagnostics;
using Idem.PostgreSql;
using Idem.Redis;
using Idem.TestUtils;
using Microsoft.Extensions.DependencyInjection;
using StackExchange.Redis;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>
/// The tiered store's own promises, on real PostgreSQL and Redis: replays come from Redis without touching PostgreSQL,
/// durable answers are written back, and a Redis outage costs speed, never a duplicate (a cache outage read as "new request" is a known cause of duplicates).
/// </summary>
[Collection(TieredServersGroup.Name)]
public sealed class TieredStoreSpecificTests(PostgreSqlServer postgres, RedisServer redis) : IAsyncLifetime
{
    private static readonly TimeSpan Day = TimeSpan.FromHours(24);
    private readonly string _schema = PostgreSqlServer.NewName("tiers");
    private readonly string _prefix = RedisServer.NewPrefix("tiers");
    private readonly List<IAsyncDisposable> _disposables = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var disposable in _disposables)
        {
            await disposable.DisposeAsync();
        }

        await postgres.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
    }

    [Fact]
    public async Task A_replay_is_served_from_Redis_without_touching_PostgreSQL()
    {
        var (tiered, durable) = await NewTieredAsync(redis.Endpoint);
        var key = NewKey();
        var owner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(Claim(key, owner), CancellationToken.None)).Status);
        Assert.True(await tiered.CompleteAsync(key, owner, Response(), Day, CancellationToken.None));
        durable.Reset();

        for (var i = 0; i < 3; i++)
        {
            var replay = await tiered.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None);
            Assert.Equal(ClaimStatus.Completed, replay.Status);
            Assert.Equal("fp", replay.Record!.Fingerprint);
            Assert.Equal(owner, replay.Record.OwnerToken);
            Assert.Equal(Response().Body.ToArray(), replay.Record.Response!.Body.ToArray());
            Assert.Equal(Response().Headers.ToArray(), replay.Record.Response.Headers.ToArray());
        }

        Assert.True(durable.Total == 0, $"durable calls {durable.Total}, cache hits {tiered.CacheHits}, failures {tiered.CacheFailures}: {tiered.LastCacheFailure}");
        Assert.Equal(3, tiered.CacheHits);
        Assert.Equal(0, tiered.CacheFailures);
    }

    [Fact]
    public async Task A_completed_answer_from_PostgreSQL_is_written_back_to_Redis()
    {
        var (tiered, durable) = await NewTieredAsync(redis.Endpoint);
        var key = NewKey();
        var owner = Guid.NewGuid();

        // Completed through the durable store alone (another node without the cache, or a cache write that failed).
        Assert.Equal(ClaimStatus.Claimed, (await durable.TryClaimAsync(Claim(key, owner), CancellationToken.None)).Status);
        Assert.True(await durable.CompleteAsync(key, owner, Response(), Day, CancellationToken.None));
        durable.Reset();

        var first = await tiered.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None);
        Assert.Equal(ClaimStatus.Completed, first.Status);
        Assert.Equal(1, durable.Claims);
        Assert.Equal(0, tiered.CacheHits);

        // Written back with the durable record's expiry as its TTL.
        var db = (await Multiplexer(redis.Endpoint)).GetDatabase();
        var ttl = await db.KeyTimeToLiveAsync(_prefix + "{" + key + "}");
        Assert.NotNull(ttl);
        Assert.InRange(ttl.Value, Day - TimeSpan.FromMinutes(1), Day + TimeSpan.FromMinutes(1));

        var second = await tiered.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None);
        Assert.Equal(ClaimStatus.Completed, second.Status);
        Assert.Equal(1, durable.Claims);
        Assert.Equal(1, tiered.CacheHits);
    }

    [Fact]
    public async Task In_flight_claims_and_releases_never_reach_the_cache()
    {
        var (tiered, _) = await NewTieredAsync(redis.Endpoint);
        var key = NewKey();
        var owner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(Claim(key, owner), CancellationToken.None)).Status);
        Assert.Equal(ClaimStatus.InFlight, (await tiered.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.True(await tiered.ReleaseAsync(key, owner, CancellationToken.None));

        var db = (await Multiplexer(redis.Endpoint)).GetDatabase();
        Assert.False(await db.KeyExistsAsync(_prefix + "{" + key + "}"));
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
    }

    [Fact]
    public async Task A_fenced_completion_never_reaches_the_cache()
    {
        var (tiered, _) = await NewTieredAsync(redis.Endpoint);
        var key = NewKey();
        var stale = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(new ClaimRequest(key, "fp", stale, TimeSpan.FromMilliseconds(300), Day), CancellationToken.None)).Status);
        await Task.Delay(TimeSpan.FromMilliseconds(700));
        var newOwner = Guid.NewGuid();
        Assert.True((await tiered.TryClaimAsync(Claim(key, newOwner), CancellationToken.None)).TookOver);

        Assert.False(await tiered.CompleteAsync(key, stale, new StoredResponse(200, null, "stale"u8.ToArray()), Day, CancellationToken.None));

        var db = (await Multiplexer(redis.Endpoint)).GetDatabase();
        Assert.False(await db.KeyExistsAsync(_prefix + "{" + key + "}"));
        var claim = await tiered.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None);
        Assert.Equal(ClaimStatus.InFlight, claim.Status);
        Assert.Equal(newOwner, claim.Record!.OwnerToken);
    }

    [Fact]
    public async Task During_a_Redis_outage_a_storm_of_one_key_executes_once_and_replays_come_from_PostgreSQL()
    {
        await using var privateRedis = await RedisServer.StartPrivateAsync();
        var (tiered, durable) = await NewTieredAsync(privateRedis.Endpoint);

        // A key completed (and cached) before the outage still replays afterwards, from PostgreSQL.
        var before = NewKey();
        var beforeOwner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(Claim(before, beforeOwner), CancellationToken.None)).Status);
        Assert.True(await tiered.CompleteAsync(before, beforeOwner, Response(), Day, CancellationToken.None));

        await privateRedis.KillAsync();
        durable.Reset();

        const int Storm = 256;
        var key = NewKey();
        var clock = Stopwatch.StartNew();
        var results = await Task.WhenAll(Enumerable.Range(0, Storm).Select(_ => Task.Run(async () =>
        {
            var owner = Guid.NewGuid();
            return (owner, result: await tiered.TryClaimAsync(Claim(key, owner), CancellationToken.None));
        })));

        var winner = Assert.Single(results, r => r.result.Status == ClaimStatus.Claimed);
        Assert.All(results.Where(r => r.result.Status != ClaimStatus.Claimed), r =>
        {
            Assert.Equal(ClaimStatus.InFlight, r.result.Status);
            Assert.Equal(winner.owner, r.result.Record!.OwnerToken);
        });
        Assert.Equal(Storm, durable.Claims);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"The storm took {clock.Elapsed}.");

        Assert.True(await tiered.CompleteAsync(key, winner.owner, Response(), Day, CancellationToken.None));
        var replay = await tiered.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None);
        Assert.Equal(ClaimStatus.Completed, replay.Status);
        Assert.Equal(Response().Body.ToArray(), replay.Record!.Response!.Body.ToArray());
        var old = await tiered.TryClaimAsync(Claim(before, Guid.NewGuid()), CancellationToken.None);
        Assert.Equal(ClaimStatus.Completed, old.Status);
        Assert.Equal(beforeOwner, old.Record!.OwnerToken);

        Assert.Equal(Storm + 2, durable.Claims);
        Assert.True(tiered.CacheFailures >= 1, "The cache failures were not counted.");
        Assert.Equal(0, tiered.CacheHits);
    }

    [Fact]
    public async Task After_a_cache_failure_the_cache_is_skipped_for_the_backoff()
    {
        var cache = new FailingCache();
        var durable = new CountingStore(new InMemoryIdempotencyStore());
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        var tiered = new TieredIdempotencyStore(durable, cache, new TieredIdempotencyStoreOptions { CacheBackoff = TimeSpan.FromSeconds(5) }, time);

        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(Claim(NewKey(), Guid.NewGuid()), CancellationToken.None)).Status);
        }

        Assert.Equal(1, cache.Calls);
        Assert.Equal(1, tiered.CacheFailures);

        time.Advance(TimeSpan.FromSeconds(6));
        await tiered.TryClaimAsync(Claim(NewKey(), Guid.NewGuid()), CancellationToken.None);
        Assert.Equal(2, cache.Calls);
        Assert.Equal(11, durable.Claims);
    }

    [Fact]
    public async Task A_hanging_cache_is_cut_off_at_its_deadline()
    {
        var cache = new FailingCache { Hang = true };
        var tiered = new TieredIdempotencyStore(new InMemoryIdempotencyStore(), cache, new TieredIdempotencyStoreOptions { CacheTimeout = TimeSpan.FromMilliseconds(100) });
        var clock = Stopwatch.StartNew();
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(Claim(NewKey(), Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.Equal(1, tiered.CacheFailures);
    }

    [Fact]
    public async Task A_cache_that_honours_its_token_is_cancelled_at_the_deadline_and_the_failure_says_it_timed_out()
    {
        var cache = new FailingCache { Hang = true, HonourToken = true };
        var tiered = new TieredIdempotencyStore(new InMemoryIdempotencyStore(), cache, new TieredIdempotencyStoreOptions { CacheTimeout = TimeSpan.FromMilliseconds(100) });
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(Claim(NewKey(), Guid.NewGuid()), CancellationToken.None)).Status);

        await cache.Cancelled.Task.WaitAsync(TimeSpan.FromSeconds(10)); // the cache's token was cancelled (a timeout here: never)
        var failure = Assert.IsType<TimeoutException>(tiered.LastCacheFailure);
        Assert.Contains("100 ms", failure.Message, StringComparison.Ordinal);
        Assert.Equal(1, tiered.CacheFailures);
    }

    [Fact]
    public async Task The_callers_cancellation_surfaces_and_is_not_a_cache_failure()
    {
        var cache = new FailingCache { Hang = true, HonourToken = true };
        var tiered = new TieredIdempotencyStore(new InMemoryIdempotencyStore(), cache, new TieredIdempotencyStoreOptions { CacheTimeout = TimeSpan.FromSeconds(10) });
        using var caller = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await tiered.TryClaimAsync(Claim(NewKey(), Guid.NewGuid()), caller.Token));
        await cache.Cancelled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, tiered.CacheFailures);
        Assert.Null(tiered.LastCacheFailure);
    }

    [Fact]
    public async Task WithRedisResponseCache_wraps_the_registered_store_and_needs_one()
    {
        var services = new ServiceCollection();
        var builder = new RedisStoreSpecificTests.TestBuilder(services);
        Assert.Throws<InvalidOperationException>(() => builder.WithRedisResponseCache(redis.Endpoint));

        var durable = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions { ConnectionString = postgres.ConnectionString, SchemaName = _schema, NotificationChannel = _schema + "_changed" });
        _disposables.Add(durable);
        await durable.MigrateAsync(CancellationToken.None);
        builder.UsePostgreSqlStore(postgres.ConnectionString, o => { o.SchemaName = _schema; o.NotificationChannel = _schema + "_changed"; })
            .WithRedisResponseCache(redis.Endpoint, o => o.KeyPrefix = _prefix, t => { t.CacheTimeout = TimeSpan.FromSeconds(1); t.LocalReplayCache = null; });
        Assert.Single(services, d => d.ServiceType == typeof(IIdempotencyStore));
        await using var provider = services.BuildServiceProvider();
        var tiered = Assert.IsType<TieredIdempotencyStore>(provider.GetRequiredService<IIdempotencyStore>());
        Assert.IsType<PostgreSqlIdempotencyStore>(tiered.Durable);

        var key = NewKey();
        var owner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(Claim(key, owner), CancellationToken.None)).Status);
        Assert.True(await tiered.CompleteAsync(key, owner, Response(), Day, CancellationToken.None));
        Assert.Equal(ClaimStatus.Completed, (await tiered.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.Equal(1, tiered.CacheHits);

        Assert.Throws<InvalidOperationException>(() => builder.WithRedisResponseCache(redis.Endpoint, configureTiering: t => t.CacheTimeout = TimeSpan.Zero));
    }

    private static string NewKey() => Guid.NewGuid().ToString("N");

    private static ClaimRequest Claim(string key, Guid owner) => new(key, "fp", owner, TimeSpan.FromSeconds(30), Day);

    private static StoredResponse Response() =>
        new(201, [new("Content-Type", "application/json"), new("Location", "/orders/7")], "{\"id\":7}"u8.ToArray());

    private async Task<(TieredIdempotencyStore Tiered, CountingStore Durable)> NewTieredAsync(string redisEndpoint, IdempotencyMetrics? metrics = null)
    {
        var postgresStore = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions
        {
            ConnectionString = postgres.ConnectionString,
            SchemaName = _schema,
            NotificationChannel = _schema + "_changed",
        });
        _disposables.Add(postgresStore);
        await postgresStore.MigrateAsync(CancellationToken.None);
        var cache = new RedisIdempotencyResponseCache(new RedisIdempotencyStoreOptions
        {
            Configuration = redisEndpoint,
            KeyPrefix = _prefix,
            OperationTimeout = TimeSpan.FromSeconds(1),
        });
        _disposables.Add(cache);
        var durable = new CountingStore(postgresStore);

        // A generous cache deadline: these tests are about what is served from where, not about a busy machine's latency.
        return (new TieredIdempotencyStore(durable, cache, new TieredIdempotencyStoreOptions { CacheTimeout = TimeSpan.FromSeconds(2) }, metrics: metrics), durable);
    }

    [Fact]
    public async Task Health_is_degraded_while_Redis_is_frozen_and_the_fallback_ends_when_Redis_answers_again()
    {
        await using var privateRedis = await RedisServer.StartPrivateAsync();
        await using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meterFactory = services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var gauge = new Microsoft.Extensions.Diagnostics.Metrics.Testing.MetricCollector<int>(meterFactory, IdempotencyMetrics.MeterName, "idem.cache.fallback");
        var (tiered, _) = await NewTieredAsync(privateRedis.Endpoint, new IdempotencyMetrics(meterFactory));
        var probe = TimeSpan.FromSeconds(1);

        var health = await tiered.CheckHealthAsync(probe, CancellationToken.None);
        Assert.Equal(IdempotencyHealthStatus.Healthy, health.Status);
        Assert.Equal(false, health.Data["cache.fallback_active"]);

        await privateRedis.SetFrozenAsync(true);
        try
        {
            // A request meets the frozen cache (its deadline passes) and is served by PostgreSQL: the fallback starts.
            Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(Claim(NewKey(), Guid.NewGuid()), CancellationToken.None)).Status);
            Assert.True(tiered.IsFallbackActive);
            health = await tiered.CheckHealthAsync(probe, CancellationToken.None);
            Assert.Equal(IdempotencyHealthStatus.Degraded, health.Status);
            Assert.Equal("Healthy", health.Data["durable.status"]);
            Assert.Equal("Unhealthy", health.Data["cache.status"]);
            Assert.Equal(true, health.Data["cache.fallback_active"]);
            Assert.IsType<string>(health.Data["cache.last_error"]);
        }
        finally
        {
            await privateRedis.SetFrozenAsync(false);
        }

        // Redis answers again: the next cache call (here the health probe's) ends the fallback.
        var deadline = Stopwatch.StartNew();
        do
        {
            health = await tiered.CheckHealthAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        }
        while (health.Status != IdempotencyHealthStatus.Healthy && deadline.Elapsed < TimeSpan.FromSeconds(30));

        Assert.Equal(IdempotencyHealthStatus.Healthy, health.Status);
        Assert.False(tiered.IsFallbackActive);
        Assert.Equal([0, 1, 0], gauge.GetMeasurementSnapshot().Select(m => m.Value));
    }

    private async Task<IConnectionMultiplexer> Multiplexer(string endpoint)
    {
        var multiplexer = await ConnectionMultiplexer.ConnectAsync(endpoint);
        _disposables.Add(multiplexer);
        return multiplexer;
    }

    private sealed class FailingCache : IIdempotencyResponseCache
    {
        private int _calls;

        public bool Hang { get; init; }

        public bool HonourToken { get; init; }

        // Set by the cache's own cancellation callback, which may run just after the store's wait has ended.
        public TaskCompletionSource Cancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Calls => Volatile.Read(ref _calls);

        public async ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _calls);
            if (Hang)
            {
                // Unless told to honour it, ignores its token on purpose: the tiered store must cut it off anyway.
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(30), HonourToken ? cancellationToken : CancellationToken.None);
                }
                catch (OperationCanceledException)
                {
                    Cancelled.TrySetResult();
                    throw;
                }
            }

            throw new InvalidOperationException("The cache is down.");
        }

        public ValueTask SetAsync(IdempotencyRecord completed, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _calls);
            throw new InvalidOperationException("The cache is down.");
        }
    }
}
