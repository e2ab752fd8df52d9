using Idem.PostgreSql;
using Idem.TestUtils;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>What the local replay cache adds: no round trip for a cached replay, and never a replay past retention.</summary>
public sealed class LocalReplayCacheTests
{
    private static readonly TimeSpan Retention = TimeSpan.FromMinutes(1);

    private static ClaimRequest Claim(string key, Guid owner, string fingerprint = "fp", TimeSpan? retention = null) =>
        new(key, fingerprint, owner, TimeSpan.FromSeconds(30), retention ?? Retention);

    private static StoredResponse Response() => new(201, [new("Location", "/orders/1")], "{\"id\":1}"u8.ToArray());

    private static string NewKey() => Guid.NewGuid().ToString("N");

    [Fact]
    public async Task A_cached_replay_costs_no_round_trip_and_a_first_one_costs_one()
    {
        var time = new FakeTimeProvider();
        var counting = new CountingStore(new InMemoryIdempotencyStore(time));
        var cache = new LocalReplayCacheStore(counting, timeProvider: time);
        var key = NewKey();
        var owner = Guid.NewGuid();

        Assert.Equal(ClaimStatus.Claimed, (await cache.TryClaimAsync(Claim(key, owner), CancellationToken.None)).Status);
        Assert.True(await cache.CompleteAsync(key, owner, Response(), Retention, CancellationToken.None));
        Assert.Equal(2, counting.Total); // A first execution: claim and complete.

        counting.Reset();
        var first = await cache.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None);
        Assert.Equal(ClaimStatus.Completed, first.Status);
        Assert.Equal(1, counting.Total); // The first replay on this node reads through.

        counting.Reset();
        for (var i = 0; i < 10; i++)
        {
            var replay = await cache.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None);
            Assert.Equal(ClaimStatus.Completed, replay.Status);
            Assert.Equal(owner, replay.Record!.OwnerToken);
            Assert.Equal(Response().Body.ToArray(), replay.Record.Response!.Body.ToArray());
        }

        Assert.Equal(0, counting.Total);
        Assert.Equal(10, cache.Hits);
    }

    [Fact]
    public async Task With_completions_cached_even_the_first_replay_on_the_completing_node_costs_no_round_trip()
    {
        var time = new FakeTimeProvider();
        var counting = new CountingStore(new InMemoryIdempotencyStore(time));
        var cache = new LocalReplayCacheStore(counting, new LocalReplayCacheOptions { CacheCompletions = true }, time);
        var key = NewKey();
        var owner = Guid.NewGuid();
        var pooled = Response().Body.ToArray();

        await cache.TryClaimAsync(Claim(key, owner), CancellationToken.None);
        Assert.True(await cache.CompleteAsync(key, owner, new StoredResponse(201, [], pooled), Retention, CancellationToken.None));
        Array.Clear(pooled); // The caller reuses its buffer: the cache must have copied it.
        counting.Reset();

        var replay = await cache.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None);
        Assert.Equal(ClaimStatus.Completed, replay.Status);
        Assert.Equal("fp", replay.Record!.Fingerprint);
        Assert.Equal(Response().Body.ToArray(), replay.Record.Response!.Body.ToArray());
        Assert.Equal(0, counting.Total);
    }

    [Fact]
    public async Task An_in_flight_record_is_never_cached()
    {
        var counting = new CountingStore(new InMemoryIdempotencyStore());
        var cache = new LocalReplayCacheStore(counting, new LocalReplayCacheOptions { CacheCompletions = true });
        var key = NewKey();
        var owner = Guid.NewGuid();
        await cache.TryClaimAsync(Claim(key, owner), CancellationToken.None);

        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(ClaimStatus.InFlight, (await cache.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        }

        Assert.Equal(0, cache.Count);
        Assert.Equal(4, counting.Claims); // Every claim of the in-flight key went to the store.

        Assert.True(await cache.ReleaseAsync(key, owner, CancellationToken.None));
        Assert.Equal(ClaimStatus.Claimed, (await cache.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
    }

    /// <summary>
    /// Two nodes over one store. Node B caches a record when it first replays it; once the record's retention ends
    /// and node A purges it, node B must run the next request with that key, not replay it. The naive cache beside it
    /// (kept until evicted) replays the purged record: the failure this test exists to catch.
    /// </summary>
    [Fact]
    public async Task A_record_expired_and_purged_on_one_node_is_not_replayed_from_another_nodes_cache()
    {
        var time = new FakeTimeProvider();
        var shared = new InMemoryIdempotencyStore(time);
        var nodeA = new LocalReplayCacheStore(shared, timeProvider: time);
        var nodeB = new LocalReplayCacheStore(shared, timeProvider: time);
        var naive = new NaiveReplayCache(shared);
        var key = NewKey();
        var owner = Guid.NewGuid();

        await nodeA.TryClaimAsync(Claim(key, owner), CancellationToken.None);
        Assert.True(await nodeA.CompleteAsync(key, owner, Response(), Retention, CancellationToken.None));
        Assert.Equal(ClaimStatus.Completed, (await nodeB.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.Equal(ClaimStatus.Completed, (await naive.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.Equal(1, nodeB.Count);

        time.Advance(Retention + TimeSpan.FromSeconds(1));
        Assert.Equal(1, await nodeA.PurgeExpiredAsync(100, CancellationToken.None));
        Assert.Null(await shared.GetAsync(key, CancellationToken.None));

        var after = await nodeB.TryClaimAsync(Claim(key, Guid.NewGuid(), "fp-2"), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, after.Status);
        Assert.Equal(0, nodeB.Count);

        // The naive cache answers with the purged record, past its retention.
        Assert.Equal(ClaimStatus.Completed, (await naive.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
    }

    [Fact]
    public async Task A_record_read_while_a_deletion_of_it_arrives_is_not_cached()
    {
        // The interleaving a real channel cannot be made to produce on demand: the store's notification of a deletion
        // lands while the claim that read the (now deleted) record is on its way back. That record must not be kept.
        var shared = new InMemoryIdempotencyStore();
        var notifying = new DeletionDuringRead(shared);
        var node = new LocalReplayCacheStore(notifying);
        var key = NewKey();
        var owner = Guid.NewGuid();
        await shared.TryClaimAsync(Claim(key, owner), CancellationToken.None);
        Assert.True(await shared.CompleteAsync(key, owner, Response(), Retention, CancellationToken.None));

        notifying.DeleteDuringNextRead = key;
        Assert.Equal(ClaimStatus.Completed, (await node.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.Equal(0, node.Count);

        // Without a deletion in flight the same read is kept.
        Assert.Equal(ClaimStatus.Completed, (await node.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.Equal(1, node.Count);

        // A deletion heard later drops it; "missed" drops everything.
        notifying.Deleted(key);
        Assert.Equal(0, node.Count);
        Assert.Equal(ClaimStatus.Completed, (await node.TryClaimAsync(Claim(key, Guid.NewGuid()), CancellationToken.None)).Status);
        Assert.Equal(1, node.Count);
        notifying.Missed();
        Assert.Equal(0, node.Count);

        await node.DisposeAsync();
        Assert.Equal(0, notifying.Subscribers);
    }

    /// <summary>An in-memory store that announces deletions as the tests tell it, one of them in the middle of a read.</summary>
    private sealed class DeletionDuringRead(InMemoryIdempotencyStore inner) : IIdempotencyStore, IIdempotencyDeletionNotifier
    {
        private readonly List<(Action<string> Deleted, Action Missed)> _subscribers = [];

        public string? DeleteDuringNextRead { get; set; }

        public int Subscribers => _subscribers.Count;

        public IDisposable SubscribeToDeletions(Action<string> deleted, Action missed)
        {
            var subscriber = (deleted, missed);
            _subscribers.Add(subscriber);
            return new Unsubscribe(() => _subscribers.Remove(subscriber));
        }

        public void Deleted(string key) => _subscribers.ForEach(s => s.Deleted(key));

        public void Missed() => _subscribers.ForEach(s => s.Missed());

        public async ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
        {
            var result = await inner.TryClaimAsync(request, cancellationToken);
            if (DeleteDuringNextRead == request.Key)
            {
                DeleteDuringNextRead = null;
                Deleted(request.Key);
            }

            return result;
        }

        public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken) =>
            inner.CompleteAsync(key, ownerToken, response, retention, cancellationToken);

        public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken) => inner.ReleaseAsync(key, ownerToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken) => inner.RenewAsync(key, ownerToken, lease, cancellationToken);

        public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken) => inner.GetAsync(key, cancellationToken);

        public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken) => inner.PurgeExpiredAsync(maxRecords, cancellationToken);

        public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) =>
            inner.WaitForChangeAsync(key, observedOwner, timeout, cancellationToken);

        private sealed class Unsubscribe(Action action) : IDisposable
        {
            public void Dispose() => action();
        }
    }

    [Fact]
    public async Task The_cache_stays_within_its_byte_bound_and_keeps_a_hot_record()
    {
        var time = new FakeTimeProvider();
        var store = new InMemoryIdempotencyStore(time);
        var cache = new LocalReplayCacheStore(store, new LocalReplayCacheOptions { MaxBytes = 64 * 1024, CacheCompletions = true }, time);
        var body = new byte[1000];
        var hot = NewKey();
        await CompleteAsync(hot);
        for (var i = 0; i < 2000; i++)
        {
            await CompleteAsync(NewKey());
            Assert.Equal(ClaimStatus.Completed, (await cache.TryClaimAsync(Claim(hot, Guid.NewGuid()), CancellationToken.None)).Status);
            Assert.True(cache.Bytes <= 64 * 1024 + 2048, $"{cache.Bytes} bytes cached after {i} records");
        }

        var before = cache.Hits;
        await cache.TryClaimAsync(Claim(hot, Guid.NewGuid()), CancellationToken.None);
        Assert.Equal(before + 1, cache.Hits); // Replayed all along, so never evicted.
        Assert.InRange(cache.Count, 2, 64);

        async Task CompleteAsync(string key)
        {
            var owner = Guid.NewGuid();
            await cache.TryClaimAsync(Claim(key, owner), CancellationToken.None);
            await cache.CompleteAsync(key, owner, new StoredResponse(200, [], body), Retention, CancellationToken.None);
        }
    }

    [Fact]
    public async Task Parallel_replays_of_one_key_all_replay_the_one_execution()
    {
        var counting = new CountingStore(new InMemoryIdempotencyStore());
        var cache = new LocalReplayCacheStore(counting);
        using var meters = new TestMeterFactory();
        var executor = new IdempotencyExecutor(cache, new IdempotencyMetrics(meters));
        var executions = 0;
        var key = NewKey();
        var outcomes = await Task.WhenAll(Enumerable.Range(0, 64).Select(_ => Task.Run(async () =>
            await executor.ExecuteAsync(key, "fp", IdempotencyPolicy.Default, _ =>
            {
                Interlocked.Increment(ref executions);
                return ValueTask.FromResult(Response());
            }, CancellationToken.None))));

        Assert.Equal(1, executions);
        Assert.All(outcomes, o => Assert.Equal(Response().Body.ToArray(), o.Response!.Body.ToArray()));
        Assert.Equal(1, counting.Completes);
    }

    [Fact]
    public void WithLocalReplayCache_wraps_the_registered_store_and_refuses_to_run_without_one()
    {
        var services = new ServiceCollection();
        Assert.Throws<InvalidOperationException>(() => new Builder(services).WithLocalReplayCache());
        Assert.Throws<InvalidOperationException>(() => new Builder(services).UseInMemoryStore().WithLocalReplayCache(o => o.MaxBytes = 1));

        new Builder(services).UseInMemoryStore().WithLocalReplayCache(o => o.MaxBytes = 1024 * 1024);
        using var provider = services.BuildServiceProvider();
        var store = Assert.IsType<LocalReplayCacheStore>(provider.GetRequiredService<IIdempotencyStore>());
        Assert.IsType<InMemoryIdempotencyStore>(store.Inner);
    }


    private sealed class Builder(IServiceCollection services) : IIdempotencyBuilder
    {
        public IServiceCollection Services { get; } = services;
    }

    /// <summary>What the cache must not be: completed records kept until evicted, whatever their expiry.</summary>
    private sealed class NaiveReplayCache(IIdempotencyStore inner)
    {
        private readonly Dictionary<string, IdempotencyRecord> _records = [];

        public async ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
        {
            if (_records.TryGetValue(request.Key, out var cached))
            {
                return new ClaimResult(ClaimStatus.Completed, cached);
            }

            var result = await inner.TryClaimAsync(request, cancellationToken);
            if (result.Status == ClaimStatus.Completed)
            {
                _records[request.Key] = result.Record!;
            }

            return result;
        }
    }
}

/// <summary>The local replay cache over PostgreSQL, whose server clock judges retention.</summary>
[Collection(PostgreSqlServerGroup.Name)]
public sealed class LocalReplayCachePostgreSqlTests(PostgreSqlServer server)
{
    private static ClaimRequest Claim(string key, Guid owner, string fingerprint, TimeSpan retention) =>
        new(key, fingerprint, owner, TimeSpan.FromSeconds(30), retention);

    private static StoredResponse Response() => new(201, [new("Location", "/orders/1")], "{\"id\":1}"u8.ToArray());

    private static string NewKey() => Guid.NewGuid().ToString("N");

    /// <summary>
    /// The same on PostgreSQL, where retention is judged by the server's clock and each node has its own pool: node B's
    /// entry goes no later than the record's expiry, so after it the key is claimed again, on either node.
    /// </summary>
    [Fact]
    public async Task On_PostgreSql_a_record_past_retention_is_not_replayed_from_another_nodes_cache()
    {
        var schema = PostgreSqlServer.NewName("lrcx");
        var options = new PostgreSqlIdempotencyStoreOptions { ConnectionString = server.ConnectionString, SchemaName = schema, NotificationChannel = schema + "_changed" };
        await using var storeA = new PostgreSqlIdempotencyStore(options);
        await using var storeB = new PostgreSqlIdempotencyStore(options);
        await storeA.MigrateAsync(CancellationToken.None);
        var nodeA = new LocalReplayCacheStore(storeA, new LocalReplayCacheOptions { CacheCompletions = true, StoreClockTolerance = TimeSpan.FromMilliseconds(200) });
        var nodeB = new LocalReplayCacheStore(storeB, new LocalReplayCacheOptions { StoreClockTolerance = TimeSpan.FromMilliseconds(200) });
        for (var i = 0; i < 500 && (storeA.ListenerProcessId == 0 || storeB.ListenerProcessId == 0); i++)
        {
            await Task.Delay(20); // a listener's start tells the cache "missed", which empties it
        }

        var retention = TimeSpan.FromSeconds(2);
        var key = NewKey();
        var owner = Guid.NewGuid();

        await nodeA.TryClaimAsync(Claim(key, owner, "fp", retention), CancellationToken.None);
        Assert.True(await nodeA.CompleteAsync(key, owner, Response(), retention, CancellationToken.None));
        Assert.Equal(ClaimStatus.Completed, (await nodeB.TryClaimAsync(Claim(key, Guid.NewGuid(), "fp", retention), CancellationToken.None)).Status);
        Assert.Equal(1, nodeB.Count);
        Assert.Equal(ClaimStatus.Completed, (await nodeB.TryClaimAsync(Claim(key, Guid.NewGuid(), "fp", retention), CancellationToken.None)).Status);
        Assert.Equal(1, nodeB.Hits);

        await Task.Delay(retention + TimeSpan.FromMilliseconds(300));
        await storeA.PurgeExpiredAsync(100, CancellationToken.None);

        Assert.Equal(ClaimStatus.Claimed, (await nodeB.TryClaimAsync(Claim(key, Guid.NewGuid(), "fp-2", retention), CancellationToken.None)).Status);
        Assert.Equal(ClaimStatus.InFlight, (await nodeA.TryClaimAsync(Claim(key, Guid.NewGuid(), "fp-2", retention), CancellationToken.None)).Status);
        await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    }
}
