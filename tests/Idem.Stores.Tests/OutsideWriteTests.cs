using Idem.PostgreSql;
using Idem.TestUtils;
using Npgsql;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>
/// Issue 20, item 1: under a joined transaction, a plain ADO.NET write through another connection to the store's
/// database is refused at the first request (PostgreSQL: seen on Npgsql's ActivitySource). The naive run, with the
/// watch off, shows what it prevents: the request succeeds with a write that is not part of its transaction, and that
/// write survives the rollback of everything else.
/// </summary>
[Collection(PostgreSqlServerGroup.Name)]
public sealed class PostgreSqlOutsideWriteTests(PostgreSqlServer server) : IAsyncLifetime
{
    private readonly string _schema = PostgreSqlServer.NewName("outside");
    private PostgreSqlIdempotencyStore _store = null!;
    private IdempotencyExecutor _executor = null!;
    private readonly TestMeterFactory _meters = new();
    private static readonly IdempotencyPolicy Joined = IdempotencyPolicy.Default with { JoinedTransaction = true };

    public async Task InitializeAsync()
    {
        _store = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions
        {
            ConnectionString = server.ConnectionString,
            SchemaName = _schema,
            NotificationChannel = _schema + "_changed",
        });
        await _store.MigrateAsync(CancellationToken.None);
        await server.ExecuteAsync($"CREATE TABLE \"{_schema}\".orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, via text NOT NULL)");
        _executor = new IdempotencyExecutor(_store, new IdempotencyMetrics(_meters));
    }

    public async Task DisposeAsync()
    {
        OutsideWriteWatch.Enabled = true;
        await _store.DisposeAsync();
        _meters.Dispose();
        await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
    }

    [Fact]
    public async Task A_write_through_another_connection_is_refused_at_the_first_request_and_without_the_watch_it_is_left_outside_the_transaction()
    {
        // Refused, whether the other connection writes after the joined transaction began or before.
        foreach (var outsideFirst in new[] { false, true })
        {
            var key = "refused-" + outsideFirst;
            var error = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
                await _executor.ExecuteOnceAsync("orders", key, "f", execution => WriteBothAsync(execution, key, outsideFirst), Joined));
            Assert.Contains("through another connection than its joined transaction's", error.Message, StringComparison.Ordinal);
            Assert.Equal(0, await CountAsync(key + "-joined")); // the joined write rolled back with the refusal
            Assert.Equal(1, await CountAsync(key + "-outside")); // committed on its own before Idem could see it: what the error reports

            // The key was released: the fixed operation runs.
            Assert.Equal(1, await _executor.ExecuteOnceAsync("orders", key, "f", async execution => await InsertAsync(await execution.GetTransactionAsync(), key + "-fixed"), Joined));
        }

        // Reads through another connection, and writes through the joined transaction, are fine.
        Assert.Equal(1, await _executor.ExecuteOnceAsync("orders", "reads", "f", async execution =>
        {
            await using (var other = new NpgsqlConnection(server.ConnectionString))
            {
                await other.OpenAsync();
                await using var read = new NpgsqlCommand($"SELECT id FROM \"{_schema}\".orders FOR UPDATE", other);
                await read.ExecuteScalarAsync();
            }

            return await InsertAsync(await execution.GetTransactionAsync(), "reads-joined");
        }, Joined));

        // The naive run: the same operation, the watch off. It succeeds with a write outside its transaction, and when
        // the operation fails after it, everything is rolled back but that write.
        OutsideWriteWatch.Enabled = false;
        try
        {
            Assert.Equal(1, await _executor.ExecuteOnceAsync("orders", "naive", "f", execution => WriteBothAsync(execution, "naive", outsideFirst: false), Joined));
            await Assert.ThrowsAsync<TimeoutException>(async () => await _executor.ExecuteOnceAsync<int>("orders", "naive-failed", "f", async execution =>
            {
                await WriteBothAsync(execution, "naive-failed", outsideFirst: false);
                throw new TimeoutException("the payment provider timed out");
            }, Joined));
        }
        finally
        {
            OutsideWriteWatch.Enabled = true;
        }

        Assert.Equal(0, await CountAsync("naive-failed-joined"));
        Assert.Equal(1, await CountAsync("naive-failed-outside")); // half-written: the rollback did not reach it
    }

    [Theory]
    [InlineData("INSERT INTO t VALUES (1)", true)]
    [InlineData("  update t SET a = 1", true)]
    [InlineData("SELECT 1; DELETE FROM t", true)]
    [InlineData("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x", true)]
    [InlineData("CREATE TABLE t (a int)", true)]
    [InlineData("SELECT * FROM t WHERE a = 1", false)]
    [InlineData("SELECT * FROM t FOR UPDATE", false)]
    [InlineData("BEGIN", false)]
    [InlineData("COPY t (a) FROM STDIN (FORMAT BINARY)", true)]
    [InlineData("COPY t (a) TO STDOUT (FORMAT BINARY)", false)]
    public void Data_modifying_statements_are_told_from_reads(string sql, bool modifying) =>
        Assert.Equal(modifying, OutsideWriteWatch.IsDataModifying(sql));

    private async ValueTask<int> WriteBothAsync(IdempotentExecution execution, string key, bool outsideFirst)
    {
        if (outsideFirst)
        {
            await InsertOutsideAsync(key + "-outside");
        }

        await InsertAsync(await execution.GetTransactionAsync(), key + "-joined");
        if (!outsideFirst)
        {
            await InsertOutsideAsync(key + "-outside");
        }

        return 1;
    }

    private async Task InsertOutsideAsync(string via)
    {
        // Plain ADO.NET on a connection of its own, as a repository with its own connection string would.
        await using var other = new NpgsqlConnection(server.ConnectionString);
        await other.OpenAsync();
        await using var command = new NpgsqlCommand($"INSERT INTO \"{_schema}\".orders (via) VALUES ($1)", other) { Parameters = { new() { Value = via } } };
        await command.ExecuteNonQueryAsync();
    }

    private async Task<int> InsertAsync(System.Data.Common.DbTransaction transaction, string via)
    {
        await using var command = new NpgsqlCommand($"INSERT INTO \"{_schema}\".orders (via) VALUES ($1)", (NpgsqlConnection)transaction.Connection!, (NpgsqlTransaction)transaction)
        {
            Parameters = { new() { Value = via } },
        };
        return await command.ExecuteNonQueryAsync();
    }

    private async Task<long> CountAsync(string via) =>
        (long)(await server.ExecuteAsync($"SELECT count(*) FROM \"{_schema}\".orders WHERE via = '{via}'"))!;

}

/// <summary>
/// Issue 20, item 1, on SQLite: the joined transaction holds the file's write lock, so a write through another
/// connection cannot commit; it fails after its busy timeout and Idem answers with a clear error, nothing committed.
/// Without the refusal the operation failed with a bare "database is locked". A write through another connection
/// before the joined transaction begins is not seen (the documented limit): it commits on its own.
/// </summary>
public sealed class SqliteOutsideWriteTests : IAsyncLifetime
{
    private readonly string _path = Path.Combine(Path.GetTempPath(), "idem-outside-" + Guid.NewGuid().ToString("N")[..12] + ".db");
    private Idem.Sqlite.SqliteIdempotencyStore _store = null!;
    private IdempotencyExecutor _executor = null!;
    private readonly TestMeterFactory _meters = new();
    private static readonly IdempotencyPolicy Joined = IdempotencyPolicy.Default with { JoinedTransaction = true };

    public async Task InitializeAsync()
    {
        _store = new Idem.Sqlite.SqliteIdempotencyStore(new Idem.Sqlite.SqliteIdempotencyStoreOptions { Path = _path });
        await using var connection = await _store.OpenConnectionAsync(CancellationToken.None);
        await using var command = connection.CreateCommand();
        command.CommandText = "CREATE TABLE orders (id INTEGER PRIMARY KEY, via TEXT NOT NULL)";
        await command.ExecuteNonQueryAsync();
        _executor = new IdempotencyExecutor(_store, new IdempotencyMetrics(_meters));
    }

    public async Task DisposeAsync()
    {
        await _store.DisposeAsync();
        _meters.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        foreach (var file in new[] { _path, _path + "-wal", _path + "-shm" })
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task A_write_through_another_connection_while_the_joined_transaction_holds_the_lock_is_refused_with_a_clear_error_and_nothing_commits()
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () => await _executor.ExecuteOnceAsync("orders", "locked", "f", async execution =>
        {
            await InsertAsync(await execution.GetTransactionAsync(), "locked-joined");
            await InsertOutsideAsync("locked-outside");
            return 1;
        }, Joined));
        Assert.Contains("through another connection while its joined transaction held the file's write lock", error.Message, StringComparison.Ordinal);
        Assert.IsType<Microsoft.Data.Sqlite.SqliteException>(error.InnerException); // what it was without the refusal: "database is locked"
        Assert.Equal(0, await CountAsync("locked-joined"));
        Assert.Equal(0, await CountAsync("locked-outside"));
        Assert.Equal(1, await _executor.ExecuteOnceAsync("orders", "locked", "f", async execution => await InsertAsync(await execution.GetTransactionAsync(), "locked-fixed"), Joined));

        // Not seen on SQLite: the other connection writes before the joined transaction begins, and commits on its own.
        Assert.Equal(1, await _executor.ExecuteOnceAsync("orders", "before", "f", async execution =>
        {
            await InsertOutsideAsync("before-outside");
            return await InsertAsync(await execution.GetTransactionAsync(), "before-joined");
        }, Joined));
        Assert.Equal(1, await CountAsync("before-outside"));
    }

    private async Task InsertOutsideAsync(string via)
    {
        // Its own connection to the same file, with a short busy timeout (the default is 30 s).
        await using var other = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={_path};Default Timeout=1;Pooling=false");
        await other.OpenAsync();
        await using var command = other.CreateCommand();
        command.CommandText = "INSERT INTO orders (via) VALUES ($via)";
        command.Parameters.AddWithValue("$via", via);
        await command.ExecuteNonQueryAsync();
    }

    private static async Task<int> InsertAsync(System.Data.Common.DbTransaction transaction, string via)
    {
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO orders (via) VALUES ($via)";
        command.Parameters.Add(new Microsoft.Data.Sqlite.SqliteParameter("$via", via));
        return await command.ExecuteNonQueryAsync();
    }

    private async Task<long> CountAsync(string via)
    {
        await using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={_path};Pooling=false");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(*) FROM orders WHERE via = $via";
        command.Parameters.AddWithValue("$via", via);
        return (long)(await command.ExecuteScalarAsync())!;
    }

}
