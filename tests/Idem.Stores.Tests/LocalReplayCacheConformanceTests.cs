using Idem.PostgreSql;
using Idem.Redis;
using Idem.TestUtils;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>
/// The conformance suite with a local replay cache in front of the in-memory store; a second instance is a second
/// node (its own cache) over the same records. Completions are cached too, so both ways into the cache are exercised.
/// </summary>
public sealed class InMemoryWithLocalReplayCacheTests : IdempotencyStoreConformanceTests
{
    private InMemoryIdempotencyStore? _shared;

    protected override bool UsesAppClock => true;

    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider)
    {
        _shared = new InMemoryIdempotencyStore(timeProvider);
        return ValueTask.FromResult<IIdempotencyStore>(new LocalReplayCacheStore(_shared, new LocalReplayCacheOptions { CacheCompletions = true }, timeProvider));
    }

    protected override ValueTask<IIdempotencyStore> CreateSecondInstanceAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new LocalReplayCacheStore(_shared!, new LocalReplayCacheOptions { CacheCompletions = true }, timeProvider));
}

/// <summary>The conformance suite with a local replay cache (completions cached) in front of a real PostgreSQL store.</summary>
[Collection(PostgreSqlServerGroup.Name)]
public sealed class PostgreSqlWithLocalReplayCacheTests(PostgreSqlServer server) : IdempotencyStoreConformanceTests
{
    private readonly string _schema = PostgreSqlServer.NewName("lrc");
    private readonly List<PostgreSqlIdempotencyStore> _stores = [];

    protected override bool UsesAppClock => false;

    protected override async ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider)
    {
        var store = NewStore();
        await store.MigrateAsync(CancellationToken.None);
        return new LocalReplayCacheStore(store, new LocalReplayCacheOptions { CacheCompletions = true });
    }

    protected override ValueTask<IIdempotencyStore> CreateSecondInstanceAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new LocalReplayCacheStore(NewStore(), new LocalReplayCacheOptions { CacheCompletions = true }));

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        foreach (var store in _stores)
        {
            await store.DisposeAsync();
        }

        await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
    }

    private PostgreSqlIdempotencyStore NewStore()
    {
        var store = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions
        {
            ConnectionString = server.ConnectionString,
            SchemaName = _schema,
            NotificationChannel = _schema + "_changed",
        });
        _stores.Add(store);
        return store;
    }
}

/// <summary>The conformance suite with a local replay cache (read-through only, the default) in front of a real Redis store.</summary>
[Collection(RedisServerGroup.Name)]
public sealed class RedisWithLocalReplayCacheTests(RedisServer server) : IdempotencyStoreConformanceTests
{
    private readonly string _prefix = RedisServer.NewPrefix("lrc");
    private readonly List<RedisIdempotencyStore> _stores = [];

    protected override bool UsesAppClock => false;

    protected override bool ExpiresRecordsItself => true;

    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new LocalReplayCacheStore(NewStore()));

    protected override ValueTask<IIdempotencyStore> CreateSecondInstanceAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new LocalReplayCacheStore(NewStore()));

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        foreach (var store in _stores)
        {
            await store.DisposeAsync();
        }
    }

    private RedisIdempotencyStore NewStore()
    {
        var store = new RedisIdempotencyStore(new RedisIdempotencyStoreOptions { Configuration = server.Endpoint, KeyPrefix = _prefix });
        _stores.Add(store);
        return store;
    }
}
