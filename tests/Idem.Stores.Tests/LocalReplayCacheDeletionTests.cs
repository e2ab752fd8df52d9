using Idem.PostgreSql;
using Idem.Redis;
using Idem.TestUtils;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>
/// An operator's deletion (<c>idem keys purge KEY</c>) reaches every node's local replay cache through the store's own
/// channel, on real servers: each node forgets the key, and a node that may have missed a deletion forgets everything.
/// Each proof runs beside a cache over the same store behind a pass-through that announces nothing, which replays the deleted record.
/// </summary>
[Collection(TieredServersGroup.Name)]
public sealed class LocalReplayCacheDeletionTests(PostgreSqlServer postgres, RedisServer redis) : IAsyncLifetime
{
    private static readonly TimeSpan Retention = TimeSpan.FromHours(1);
    private static readonly TimeSpan Heard = TimeSpan.FromSeconds(10);
    private readonly string _schema = PostgreSqlServer.NewName("lrcdel");
    private readonly string _prefix = RedisServer.NewPrefix("lrcdel");
    private readonly List<IAsyncDisposable> _disposables = [];

    public async Task InitializeAsync()
    {
        await using var migrator = NewPostgreSqlStore();
        await migrator.MigrateAsync(CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        for (var i = _disposables.Count - 1; i >= 0; i--)
        {
            await _disposables[i].DisposeAsync();
        }

        await postgres.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
    }

    public static TheoryData<string> Stores => new() { "postgres", "redis", "tiered" };

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task A_key_an_operator_deletes_is_forgotten_by_every_nodes_cache_and_runs_again(string kind)
    {
        var nodeA = new LocalReplayCacheStore(await NodeAsync(kind));
        var nodeB = new LocalReplayCacheStore(await NodeAsync(kind));
        var hidden = new LocalReplayCacheStore(new CountingStore(await NodeAsync(kind))); // passes everything through, announces nothing
        var operatorStore = (IIdempotencyStoreAdmin)await NodeAsync(kind); // what `idem keys purge` opens
        await WaitUntilListeningAsync(nodeB);

        var key = NewKey();
        var owner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await nodeA.TryClaimAsync(Claim(key, owner), CancellationToken.None)).Status);
        Assert.True(await nodeA.CompleteAsync(key, owner, Response(), Retention, CancellationToken.None));
        foreach (var node in new[] { nodeB, hidden })
        {
            Assert.Equal(ClaimStatus.Completed, (await node.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
            Assert.Equal(ClaimStatus.Completed, (await node.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
            Assert.Equal(1, node.Hits);
        }

        Assert.True(await operatorStore.DeleteAsync(key, CancellationToken.None));
        await WaitForAsync(() => nodeB.Count == 0, "node B never heard of the deletion");
        Assert.Equal(ClaimStatus.Claimed, (await nodeB.TryClaimAsync(Claim(key, Guid.NewGuid(), "fp-2"), CancellationToken.None)).Status);

        // The naive variant: the same cache, the same store, without the notifications: it replays the deleted record.
        Assert.Equal(ClaimStatus.Completed, (await hidden.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.Equal(2, hidden.Hits);
    }

    [Fact]
    public async Task A_node_whose_listener_was_down_during_a_deletion_forgets_everything_it_kept()
    {
        // PostgreSQL delivers a NOTIFY only to sessions listening when it commits. Node B's LISTEN connection is ended
        // and the key deleted before it reconnects: the deletion is never heard, and only "missed" keeps node B from
        // replaying the deleted record.
        var options = PostgreSqlOptions();
        options.ListenerReconnectMinDelay = TimeSpan.FromSeconds(2);
        var storeB = Track(new PostgreSqlIdempotencyStore(options));
        var nodeB = new LocalReplayCacheStore(storeB);
        var heard = new List<string>();
        var missed = 0;
        using var recorder = storeB.SubscribeToDeletions(k => { lock (heard) { heard.Add(k); } }, () => Interlocked.Increment(ref missed));
        var nodeA = Track(NewPostgreSqlStore());
        await WaitUntilListeningAsync(nodeB);

        var key = NewKey();
        var owner = Guid.NewGuid();
        await nodeA.TryClaimAsync(Claim(key, owner), CancellationToken.None);
        Assert.True(await nodeA.CompleteAsync(key, owner, Response(), Retention, CancellationToken.None));
        Assert.Equal(ClaimStatus.Completed, (await nodeB.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.Equal(1, nodeB.Count);
        var missedBefore = Volatile.Read(ref missed);

        var listener = storeB.ListenerProcessId;
        await postgres.ExecuteAsync($"SELECT pg_terminate_backend({listener})");
        await WaitForAsync(() => storeB.ListenerProcessId != listener, "node B's listener never noticed it was ended");
        Assert.True(await ((IIdempotencyStoreAdmin)nodeA).DeleteAsync(key, CancellationToken.None));
        await WaitForAsync(() => storeB.ListenerProcessId != 0 && storeB.ListenerProcessId != listener, "node B's listener never came back");

        lock (heard)
        {
            Assert.DoesNotContain(key, heard); // the notification was lost
        }

        Assert.True(Volatile.Read(ref missed) > missedBefore);
        Assert.Equal(0, nodeB.Count);
        Assert.Equal(ClaimStatus.Claimed, (await nodeB.TryClaimAsync(Claim(key, Guid.NewGuid(), "fp-2"), CancellationToken.None)).Status);
    }

    [Fact]
    public async Task The_tiered_store_registered_with_a_response_cache_gets_a_local_replay_cache_by_default()
    {
        // The wiring is under test, not the cache's deadline: on a loaded box a Redis call can outlast the default 250 ms,
        // which counts as a cache failure (a miss, then a back-off) and would move the hit counters and the health below.
        var services = new ServiceCollection();
        new RedisStoreSpecificTests.TestBuilder(services)
            .UsePostgreSqlStore(postgres.ConnectionString, o => { o.SchemaName = _schema; o.NotificationChannel = _schema + "_changed"; })
            .WithRedisResponseCache(redis.Endpoint, o => o.KeyPrefix = _prefix, t => t.CacheTimeout = TimeSpan.FromSeconds(10));
        await using (var provider = services.BuildServiceProvider())
        {
            var local = Assert.IsType<LocalReplayCacheStore>(provider.GetRequiredService<IIdempotencyStore>());
            var tiered = Assert.IsType<TieredIdempotencyStore>(local.Inner);
            Assert.IsType<PostgreSqlIdempotencyStore>(tiered.Durable);
            await WaitUntilListeningAsync(local); // its start says "missed", which empties the cache

            var key = NewKey();
            var owner = Guid.NewGuid();
            Assert.Equal(ClaimStatus.Claimed, (await local.TryClaimAsync(Claim(key, owner), CancellationToken.None)).Status);
            Assert.True(await local.CompleteAsync(key, owner, Response(), Retention, CancellationToken.None));
            Assert.Equal(ClaimStatus.Completed, (await local.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
            Assert.Equal(ClaimStatus.Completed, (await local.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
            Assert.Equal(1, tiered.CacheHits); // the first replay from Redis
            Assert.Equal(1, local.Hits);       // the second from memory

            // The health report is the tiered store's own, tier by tier.
            var health = await IdempotencyStoreHealth.ProbeAsync(local, TimeSpan.FromSeconds(5), CancellationToken.None);
            Assert.Equal(IdempotencyHealthStatus.Healthy, health.Status);
            Assert.Equal(nameof(PostgreSqlIdempotencyStore), health.Data["durable.store"]);
        }

        // Off on request; and WithLocalReplayCache replaces the default one rather than stacking a second.
        var off = new ServiceCollection();
        new RedisStoreSpecificTests.TestBuilder(off)
            .UsePostgreSqlStore(postgres.ConnectionString, o => { o.SchemaName = _schema; o.NotificationChannel = _schema + "_changed"; })
            .WithRedisResponseCache(redis.Endpoint, o => o.KeyPrefix = _prefix, t => t.LocalReplayCache = null);
        await using (var provider = off.BuildServiceProvider())
        {
            Assert.IsType<TieredIdempotencyStore>(provider.GetRequiredService<IIdempotencyStore>());
        }

        var replaced = new ServiceCollection();
        new RedisStoreSpecificTests.TestBuilder(replaced)
            .UsePostgreSqlStore(postgres.ConnectionString, o => { o.SchemaName = _schema; o.NotificationChannel = _schema + "_changed"; })
            .WithRedisResponseCache(redis.Endpoint, o => o.KeyPrefix = _prefix, t => t.CacheTimeout = TimeSpan.FromSeconds(10))
            .WithLocalReplayCache(o => o.CacheCompletions = true);
        await using (var provider = replaced.BuildServiceProvider())
        {
            var local = Assert.IsType<LocalReplayCacheStore>(provider.GetRequiredService<IIdempotencyStore>());
            Assert.IsType<TieredIdempotencyStore>(local.Inner);
            await WaitUntilListeningAsync(local);
            var key = NewKey();
            var owner = Guid.NewGuid();
            await local.TryClaimAsync(Claim(key, owner), CancellationToken.None);
            Assert.True(await local.CompleteAsync(key, owner, Response(), Retention, CancellationToken.None));
            Assert.Equal(1, local.Count); // CacheCompletions: these options, not the default ones
        }
    }

    private Task<IIdempotencyStore> NodeAsync(string kind) => Task.FromResult(Node(kind));

    private IIdempotencyStore Node(string kind)
    {
        switch (kind)
        {
            case "postgres":
                return Track(NewPostgreSqlStore());
            case "redis":
                return Track(new RedisIdempotencyStore(new RedisIdempotencyStoreOptions { Configuration = redis.Endpoint, KeyPrefix = _prefix }));
            default:
                var cache = new RedisIdempotencyResponseCache(new RedisIdempotencyStoreOptions { Configuration = redis.Endpoint, KeyPrefix = _prefix + "cache:" });
                return Track(new TieredIdempotencyStore(NewPostgreSqlStore(), cache, new TieredIdempotencyStoreOptions(), null, null, null, ownsDurable: true, ownsCache: true));
        }
    }

    private PostgreSqlIdempotencyStoreOptions PostgreSqlOptions() =>
        new() { ConnectionString = postgres.ConnectionString, SchemaName = _schema, NotificationChannel = _schema + "_changed" };

    private PostgreSqlIdempotencyStore NewPostgreSqlStore() => new(PostgreSqlOptions());

    private T Track<T>(T store)
        where T : IAsyncDisposable
    {
        _disposables.Add(store);
        return store;
    }

    /// <summary>Until each node's store listens for deletions (and has said "missed" for its start), so what it caches next stays.</summary>
    private static async Task WaitUntilListeningAsync(params LocalReplayCacheStore[] nodes)
    {
        foreach (var node in nodes)
        {
            var store = node.Inner is TieredIdempotencyStore tiered ? tiered.Durable : node.Inner;
            switch (store)
            {
                case PostgreSqlIdempotencyStore postgreSql:
                    await WaitForAsync(() => postgreSql.ListenerProcessId != 0, "the PostgreSQL listener never started");
                    break;
                case RedisIdempotencyStore redisStore:
                    await WaitForAsync(() => redisStore.ListeningForDeletions, "the Redis subscription never started");
                    break;
            }
        }
    }

    private static async Task WaitForAsync(Func<bool> condition, string failure)
    {
        var deadline = DateTime.UtcNow + Heard;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, failure);
            await Task.Delay(20);
        }
    }

    private static ClaimRequest Claim(string key, Guid owner, string fingerprint = "fp") => new(key, fingerprint, owner, TimeSpan.FromSeconds(30), Retention);

    private static StoredResponse Response() => new(201, [new("Location", "/orders/1")], "{\"id\":1}"u8.ToArray());

    private static string NewKey() => Convert.ToHexString(Guid.NewGuid().ToByteArray()).ToLowerInvariant() + Convert.ToHexString(Guid.NewGuid().ToByteArray()).ToLowerInvariant();
}
