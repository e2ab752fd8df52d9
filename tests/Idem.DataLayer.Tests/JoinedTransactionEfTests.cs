using Idem.EntityFrameworkCore;
using Idem.PostgreSql;
using Idem.Sqlite;
using Idem.TestUtils;
using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Xunit;

namespace Idem.DataLayer.Tests;

/// <summary>
/// Issue 20, item 1 over EF Core: a DbContext's SaveChanges joins the executor's transaction on the context's own
/// connection, commits with the key's completion, rolls back with a stale owner, and writes outside it are refused.
/// </summary>
public abstract class JoinedTransactionEfTests : IAsyncLifetime
{
    protected abstract IIdempotencyStore Store { get; }

    public abstract Task InitializeAsync();

    public abstract Task DisposeAsync();

    protected abstract TestContext NewContext(bool guard = true);

    protected abstract Task TakeOverAsync(string storeKey);

    [Fact]
    public async Task SaveChanges_commits_with_the_completion_and_replays_never_run_again()
    {
        var executor = Executor();
        var runs = 0;
        await using var db = NewContext(); // lives until the execution ends (a scoped context in ASP.NET Core)
        async ValueTask<long> Work(IdempotentExecution execution)
        {
            runs++;
            var community = new Community { Name = "Joined", Slug = "joined-" + Guid.NewGuid().ToString("N")[..8] };
            db.Communities.Add(community);
            await db.SaveChangesAsync(); // joins by itself (AddIdempotencyJoinedTransaction)
            Assert.Same(execution.Transaction, db.Database.CurrentTransaction!.GetDbTransaction());
            return community.Id;
        }

        var id = await executor.ExecuteOnceAsync("communities", "k1", "k1", Work, Joined);
        Assert.Equal(id, await executor.ExecuteOnceAsync("communities", "k1", "k1", Work, Joined));
        Assert.Equal(1, runs);
        await using var check = NewContext();
        Assert.Equal(1, await check.Communities.CountAsync(c => c.Id == id));
        Assert.Equal(IdempotencyRecordState.Completed, (await Store.GetAsync(IdempotencyScope.ComputeStoreKey(string.Empty, "communities", "k1"), default))!.State);
    }

    [Fact]
    public async Task A_stale_owner_rolls_back_its_SaveChanges()
    {
        var executor = Executor();
        var slug = "stale-" + Guid.NewGuid().ToString("N")[..8];
        var storeKey = IdempotencyScope.ComputeStoreKey(string.Empty, "communities", "k2");
        await using var db = NewContext();
        var error = await Assert.ThrowsAsync<IdempotencyException>(async () => await executor.ExecuteOnceAsync("communities", "k2", "k2", async execution =>
        {
            await TakeOverAsync(storeKey); // another owner took the key while this one worked
            db.Communities.Add(new Community { Name = "Stale", Slug = slug });
            await db.SaveChangesAsync();
            return 1;
        }, Joined with { ConflictBehavior = ConflictBehavior.Reject }));
        Assert.Equal(IdempotencyOutcomeKind.Conflict, error.Outcome.Kind);

        await using var check = NewContext();
        Assert.Equal(0, await check.Communities.CountAsync(c => c.Slug == slug));
    }

    [Fact]
    public async Task Writes_outside_the_joined_transaction_are_refused_at_the_first_request()
    {
        var executor = Executor();

        // Raw SQL through a context that has not joined.
        await using var db = NewContext();
        await using var first = NewContext();
        await using var other = NewContext();
        await using var committer = NewContext();
        var raw = await Assert.ThrowsAsync<InvalidOperationException>(async () => await executor.ExecuteOnceAsync("communities", "k3", "k3", async execution =>
        {
            await db.Database.ExecuteSqlRawAsync("DELETE FROM communities WHERE id = -1");
            return 1;
        }, Joined));
        Assert.Contains("outside the joined transaction", raw.Message, StringComparison.Ordinal);

        // A second context (a second connection) after the first joined.
        var second = await Assert.ThrowsAsync<InvalidOperationException>(async () => await executor.ExecuteOnceAsync("communities", "k4", "k4", async execution =>
        {
            first.Communities.Add(new Community { Name = "A", Slug = "a-" + Guid.NewGuid().ToString("N")[..8] });
            await first.SaveChangesAsync();
            other.Communities.Add(new Community { Name = "B", Slug = "b-" + Guid.NewGuid().ToString("N")[..8] });
            await other.SaveChangesAsync();
            return 1;
        }, Joined));
        Assert.Contains("another connection", second.Message, StringComparison.Ordinal);

        // A handler that commits the joined transaction itself.
        var committed = await Assert.ThrowsAsync<InvalidOperationException>(async () => await executor.ExecuteOnceAsync("communities", "k5", "k5", async execution =>
        {
            committer.Communities.Add(new Community { Name = "C", Slug = "c-" + Guid.NewGuid().ToString("N")[..8] });
            await committer.SaveChangesAsync();
            await committer.Database.CommitTransactionAsync();
            return 1;
        }, Joined));
        Assert.Contains("committed or rolled back the joined transaction itself", committed.Message, StringComparison.Ordinal);
    }

    protected static IdempotencyPolicy Joined { get; } = IdempotencyPolicy.Default with { JoinedTransaction = true };

    private IdempotencyExecutor Executor() => new(Store, new IdempotencyMetrics(new PlainMeterFactory()));

    private sealed class PlainMeterFactory : System.Diagnostics.Metrics.IMeterFactory
    {
        public System.Diagnostics.Metrics.Meter Create(System.Diagnostics.Metrics.MeterOptions options) => new(options);

        public void Dispose()
        {
        }
    }
}

public sealed class SqliteJoinedTransactionEfTests : JoinedTransactionEfTests
{
    private readonly string _directory = Directory.CreateTempSubdirectory("idem-ef-joined-").FullName;
    private SqliteIdempotencyStore? _store;

    private string DatabasePath => Path.Combine(_directory, "app.db");

    protected override IIdempotencyStore Store => _store!;

    public override async Task InitializeAsync()
    {
        await using (var connection = new SqliteConnection($"Data Source={DatabasePath}"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = """
                PRAGMA journal_mode = WAL;
                CREATE TABLE communities (id INTEGER PRIMARY KEY, name TEXT NOT NULL, slug TEXT NOT NULL UNIQUE);
                CREATE TABLE chats (id INTEGER PRIMARY KEY, participants_key TEXT NOT NULL UNIQUE, title TEXT);
                """;
            await command.ExecuteNonQueryAsync();
        }

        _store = new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = DatabasePath });
    }

    public override async Task DisposeAsync()
    {
        await _store!.DisposeAsync();
        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    protected override TestContext NewContext(bool guard = true)
    {
        var options = new DbContextOptionsBuilder<TestContext>().UseSqlite($"Data Source={DatabasePath}");
        return new TestContext((guard ? options.AddIdempotencyJoinedTransaction() : options).Options);
    }

    protected override async Task TakeOverAsync(string storeKey)
    {
        await using var connection = new SqliteConnection($"Data Source={DatabasePath};Pooling=False");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = "UPDATE idem_records SET owner = randomblob(16) WHERE key = $key";
        command.Parameters.AddWithValue("$key", storeKey);
        Assert.Equal(1, await command.ExecuteNonQueryAsync());
    }
}

[Collection(SharedPostgreSql.Name)]
public sealed class PostgreSqlJoinedTransactionEfTests(PostgreSqlServer server) : JoinedTransactionEfTests
{
    private readonly string _schema = PostgreSqlServer.NewName("efjoined");
    private PostgreSqlIdempotencyStore? _store;

    protected override IIdempotencyStore Store => _store!;

    public override async Task InitializeAsync()
    {
        await server.ExecuteAsync($"CREATE SCHEMA \"{_schema}\"; CREATE TABLE \"{_schema}\".communities (id bigserial PRIMARY KEY, name text NOT NULL, slug text NOT NULL UNIQUE); CREATE TABLE \"{_schema}\".chats (id bigserial PRIMARY KEY, participants_key text NOT NULL UNIQUE, title text)");
        var storeOptions = new PostgreSqlIdempotencyStoreOptions { ConnectionString = server.ConnectionString, SchemaName = _schema, NotificationChannel = _schema + "_changed" };
        _store = new PostgreSqlIdempotencyStore(storeOptions);
        await new PostgreSqlIdempotencyMigrator(_store.DataSource, storeOptions).MigrateAsync(CancellationToken.None);
    }

    public override async Task DisposeAsync()
    {
        await _store!.DisposeAsync();
        await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
    }

    protected override TestContext NewContext(bool guard = true)
    {
        var connection = new Npgsql.NpgsqlConnectionStringBuilder(server.ConnectionString) { SearchPath = _schema }.ConnectionString;
        var options = new DbContextOptionsBuilder<TestContext>().UseNpgsql(connection);
        return new TestContext((guard ? options.AddIdempotencyJoinedTransaction() : options).Options);
    }

    protected override Task TakeOverAsync(string storeKey) =>
        server.ExecuteAsync($"UPDATE \"{_schema}\".idem_records SET owner_token = gen_random_uuid() WHERE key = '{storeKey}'");
}
