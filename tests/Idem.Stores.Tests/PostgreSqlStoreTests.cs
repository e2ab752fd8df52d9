using Idem.PostgreSql;
using Idem.TestUtils;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>One PostgreSQL server for every PostgreSQL test class in the run.</summary>
[CollectionDefinition(Name)]
public sealed class PostgreSqlServerGroup : ICollectionFixture<PostgreSqlServer>
{
    public const string Name = "PostgreSql";
}

/// <summary>The conformance suite against a real PostgreSQL; every test gets its own schema and channel.</summary>
[Collection(PostgreSqlServerGroup.Name)]
public sealed class PostgreSqlStoreTests(PostgreSqlServer server) : IdempotencyStoreConformanceTests
{
    private readonly string _schema = PostgreSqlServer.NewName("conf");
    private readonly List<PostgreSqlIdempotencyStore> _secondInstances = [];

    // Leases and retention are judged by the server's clock: tests use short real durations.
    protected override bool UsesAppClock => false;

    protected override async ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider)
    {
        var store = new PostgreSqlIdempotencyStore(Options());
        await store.MigrateAsync(CancellationToken.None);
        return store;
    }

    // A second node: its own store instance, connection pool and listener, over the same table.
    protected override ValueTask<IIdempotencyStore> CreateSecondInstanceAsync(TimeProvider timeProvider)
    {
        var store = new PostgreSqlIdempotencyStore(Options());
        _secondInstances.Add(store);
        return ValueTask.FromResult<IIdempotencyStore>(store);
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        foreach (var store in _secondInstances)
        {
            await store.DisposeAsync();
        }

        await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
    }

    private PostgreSqlIdempotencyStoreOptions Options() => new()
    {
        ConnectionString = server.ConnectionString,
        SchemaName = _schema,
        NotificationChannel = _schema + "_changed",
    };
}
