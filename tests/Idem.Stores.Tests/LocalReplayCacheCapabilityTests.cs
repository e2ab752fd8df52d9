using Idem.Sqlite;
using Idem.TestUtils;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>
/// Issue 21, item 3: the local replay cache must not change any answer, and so must not turn a feature off; nor must the
/// tiered store's cache in front of its durable store. Recovery points and joined transactions work through either over
/// a store that offers them (the executor records and completes them in the store beneath). The naive variant, a plain
/// wrapper that offers only IIdempotencyStore (CountingStore), as the cache did before, shows what a user who turned
/// the cache on got: a NotSupportedException from RunPhaseAsync and an InvalidOperationException for a joined
/// transaction.
/// </summary>
public sealed class LocalReplayCacheCapabilityTests : IAsyncLifetime
{
    private static readonly IdempotencyPolicy Joined = IdempotencyPolicy.Default with { JoinedTransaction = true };
    private readonly string _path = Path.Combine(Path.GetTempPath(), "idem-cache-capabilities-" + Guid.NewGuid().ToString("N")[..12] + ".db");
    private readonly TestMeterFactory _meters = new();
    private SqliteIdempotencyStore _sqlite = null!;

    public async Task InitializeAsync()
    {
        _sqlite = new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = _path });
        await using var connection = await _sqlite.OpenConnectionAsync(CancellationToken.None);
        await using var command = connection.CreateCommand();
        command.CommandText = "CREATE TABLE orders (id INTEGER PRIMARY KEY, key TEXT NOT NULL)";
        await command.ExecuteNonQueryAsync();
    }

    public async Task DisposeAsync()
    {
        await _sqlite.DisposeAsync();
        _meters.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        foreach (var file in new[] { _path, _path + "-wal", _path + "-shm" })
        {
            File.Delete(file);
        }
    }

    public static TheoryData<string> Fronts => new() { "local cache", "tiered", "local cache over tiered" };

    [Theory]
    [MemberData(nameof(Fronts))]
    public async Task A_retry_through_the_cache_skips_the_phase_its_failed_first_owner_finished(string front)
    {
        var cache = Front(front, new InMemoryIdempotencyStore(), cacheCompletions: false);
        var executor = new IdempotencyExecutor(cache.Store, new IdempotencyMetrics(_meters));
        var charges = 0;
        var failShipping = true;
        async ValueTask<int> Work(IdempotentExecution execution)
        {
            var charge = await execution.RunPhaseAsync("charge", _ => ValueTask.FromResult(++charges));
            await execution.RunPhaseAsync("ship", _ => failShipping ? throw new InvalidOperationException("the carrier is down") : ValueTask.FromResult(true));
            return charge;
        }

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await executor.ExecuteOnceAsync("orders", "o-1", "fp", Work));
        failShipping = false;
        Assert.Equal(1, await executor.ExecuteOnceAsync("orders", "o-1", "fp", Work));
        Assert.Equal(1, charges); // the recorded charge, not a second one

        // Replayed, first from the store (which the cache then keeps), then from the cache, with no phase run again.
        Assert.Equal(1, await executor.ExecuteOnceAsync("orders", "o-1", "fp", Work));
        var hits = cache.Hits();
        Assert.Equal(1, await executor.ExecuteOnceAsync("orders", "o-1", "fp", Work));
        Assert.Equal(hits + 1, cache.Hits());
        Assert.Equal(1, charges);

        // The naive variant: a wrapper that hides the store's recovery points.
        var naive = new IdempotencyExecutor(new CountingStore(new InMemoryIdempotencyStore()), new IdempotencyMetrics(_meters));
        var refused = await Assert.ThrowsAsync<NotSupportedException>(async () => await naive.ExecuteOnceAsync("orders", "o-1", "fp", Work));
        Assert.Contains("records no recovery points", refused.Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, bool> FrontsAndCaching => new()
    {
        { "local cache", false }, { "local cache", true }, { "tiered", false }, { "local cache over tiered", true },
    };

    [Theory]
    [MemberData(nameof(FrontsAndCaching))]
    public async Task A_joined_transaction_through_the_cache_commits_once_and_is_replayed_from_the_cache_after_its_commit(string front, bool cacheCompletions)
    {
        var cache = Front(front, _sqlite, cacheCompletions);
        var executor = new IdempotencyExecutor(cache.Store, new IdempotencyMetrics(_meters));
        var key = "joined-" + front.Replace(' ', '-') + "-" + cacheCompletions;
        var runs = 0;
        async ValueTask<long> Work(IdempotentExecution execution)
        {
            Interlocked.Increment(ref runs);
            await using var command = (await execution.GetTransactionAsync()).Connection!.CreateCommand();
            command.Transaction = await execution.GetTransactionAsync();
            command.CommandText = "INSERT INTO orders (key) VALUES ($key) RETURNING id";
            command.Parameters.Add(new Microsoft.Data.Sqlite.SqliteParameter("$key", key));
            return (long)(await command.ExecuteScalarAsync())!;
        }

        var id = await executor.ExecuteOnceAsync("orders", key, "fp", Work, Joined);
        Assert.Equal(0, cache.TrackedClaims()); // the claims tracked for a completion the fronts never saw are forgotten
        var hits = cache.Hits();
        Assert.Equal(id, await executor.ExecuteOnceAsync("orders", key, "fp", Work, Joined)); // from the store: the cache saw no completion
        Assert.Equal(hits, cache.Hits());
        Assert.Equal(id, await executor.ExecuteOnceAsync("orders", key, "fp", Work, Joined)); // cached at the first replay
        Assert.Equal(hits + 1, cache.Hits());
        Assert.Equal(1, runs);
        Assert.Equal(1L, await CountAsync(key));
        var record = await _sqlite.GetAsync(IdempotencyScope.ComputeStoreKey(string.Empty, "orders", key), CancellationToken.None);
        Assert.Equal(IdempotencyRecordState.Completed, record!.State);

        // The naive variant: a wrapper that hides the store's transactions refuses the policy.
        var naive = new IdempotencyExecutor(new CountingStore(_sqlite), new IdempotencyMetrics(_meters));
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(async () => await naive.ExecuteOnceAsync("orders", key + "-naive", "fp", Work, Joined));
        Assert.Contains("cannot complete inside a database transaction", refused.Message, StringComparison.Ordinal);
        Assert.Equal(0L, await CountAsync(key + "-naive"));
    }

    /// <summary>A cache in front of <paramref name="store"/>: the local replay cache, the tiered store (an in-process dictionary as its response cache), or both.</summary>
    private static (IIdempotencyStore Store, Func<long> Hits, Func<int> TrackedClaims) Front(string front, IIdempotencyStore store, bool cacheCompletions)
    {
        var tiered = front.Contains("tiered", StringComparison.Ordinal) ? new TieredIdempotencyStore(store, new DictionaryCache()) : null;
        var local = front.Contains("local cache", StringComparison.Ordinal)
            ? new LocalReplayCacheStore(tiered ?? store, new LocalReplayCacheOptions { CacheCompletions = cacheCompletions })
            : null;
        return (
            (IIdempotencyStore?)local ?? tiered!,
            () => (local?.Hits ?? 0) + (tiered?.CacheHits ?? 0),
            () => (local?.TrackedClaims ?? 0) + (tiered?.TrackedClaims ?? 0));
    }

    private async Task<long> CountAsync(string key)
    {
        await using var connection = await _sqlite.OpenConnectionAsync(CancellationToken.None);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT COUNT(*) FROM orders WHERE key = $key";
        command.Parameters.Add(new Microsoft.Data.Sqlite.SqliteParameter("$key", key));
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private sealed class DictionaryCache : IIdempotencyResponseCache
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<string, IdempotencyRecord> _records = new();

        public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken) => ValueTask.FromResult(_records.GetValueOrDefault(key));

        public ValueTask SetAsync(IdempotencyRecord completed, CancellationToken cancellationToken)
        {
            _records[completed.Key] = completed;
            return ValueTask.CompletedTask;
        }
    }

}
