using Idem.PostgreSql;
using Idem.Redis;
using Idem.TestUtils;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>Both servers, for the tiered store's tests.</summary>
[CollectionDefinition(Name)]
public sealed class TieredServersGroup : ICollectionFixture<PostgreSqlServer>, ICollectionFixture<RedisServer>
{
    public const string Name = "Tiered";
}

/// <summary>
/// The conformance suite against the tiered store: PostgreSQL as the authority, a Redis cache of completed responses in
/// front. Every test gets its own schema and key prefix; a second instance is a second node (its own pool, listener and
/// multiplexer) over both.
/// </summary>
[Collection(TieredServersGroup.Name)]
public sealed class TieredStoreTests(PostgreSqlServer postgres, RedisServer redis) : IdempotencyStoreConformanceTests
{
    private readonly string _schema = PostgreSqlServer.NewName("tier");
    private readonly string _prefix = RedisServer.NewPrefix("tier");
    private readonly List<IAsyncDisposable> _parts = [];

    protected override bool UsesAppClock => false;

    protected override async ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider)
    {
        var durable = NewDurable();
        await durable.MigrateAsync(CancellationToken.None);
        return NewTiered(durable);
    }

    protected override ValueTask<IIdempotencyStore> CreateSecondInstanceAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(NewTiered(NewDurable()));

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        foreach (var part in _parts)
        {
            await part.DisposeAsync();
        }

        await postgres.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
    }

    private PostgreSqlIdempotencyStore NewDurable()
    {
        var store = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions
        {
            ConnectionString = postgres.ConnectionString,
            SchemaName = _schema,
            NotificationChannel = _schema + "_changed",
        });
        _parts.Add(store);
        return store;
    }

    private TieredIdempotencyStore NewTiered(PostgreSqlIdempotencyStore durable)
    {
        var cache = new RedisIdempotencyResponseCache(new RedisIdempotencyStoreOptions { Configuration = redis.Endpoint, KeyPrefix = _prefix });
        _parts.Add(cache);
        return new TieredIdempotencyStore(durable, cache);
    }
}
