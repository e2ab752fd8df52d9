using System.Data.Common;
using Idem.PostgreSql;
using Idem.Sqlite;
using Idem.TestUtils;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>
/// Issue 20: what a store that records recovery points (<see cref="IRecoveryPointStore"/>) must keep, and, for the SQL
/// stores, the completion inside the caller's transaction (<see cref="ITransactionalIdempotencyStore"/>).
/// </summary>
public abstract class RecoveryPointConformanceTests : IAsyncLifetime
{
    private IRecoveryPointStore? _store;

    protected FakeTimeProvider Time { get; } = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));

    protected abstract bool UsesAppClock { get; }

    protected IRecoveryPointStore Store => _store!;

    protected TimeSpan ShortLease => UsesAppClock ? TimeSpan.FromSeconds(10) : TimeSpan.FromMilliseconds(400);

    protected abstract ValueTask<IRecoveryPointStore> CreateStoreAsync(TimeProvider timeProvider);

    public async Task InitializeAsync() => _store = await CreateStoreAsync(Time);

    public virtual async Task DisposeAsync()
    {
        if (_store is IAsyncDisposable disposable)
        {
            await disposable.DisposeAsync();
        }
    }

    [Fact]
    public async Task Phases_recorded_by_the_owner_are_read_back_kept_through_a_takeover_and_fenced()
    {
        var key = Guid.NewGuid().ToString("N");
        var (first, second) = (Guid.NewGuid(), Guid.NewGuid());
        Assert.Equal(ClaimStatus.Claimed, (await Store.TryClaimAsync(Claim(key, first), default)).Status);
        Assert.True(await Store.RecordPhasesAsync(key, first, new byte[] { 1, 2, 3 }, default));
        Assert.Equal(new byte[] { 1, 2, 3 }, (await Store.GetAsync(key, default))!.Phases.ToArray());

        await AdvanceAsync(ShortLease + TimeSpan.FromMilliseconds(200));
        var takeover = await Store.TryClaimAsync(Claim(key, second), default);
        Assert.Equal(ClaimStatus.Claimed, takeover.Status);
        Assert.True(takeover.TookOver);
        Assert.Equal(new byte[] { 1, 2, 3 }, (await Store.GetAsync(key, default))!.Phases.ToArray());

        Assert.False(await Store.RecordPhasesAsync(key, first, new byte[] { 9 }, default)); // the stale owner
        Assert.True(await Store.RecordPhasesAsync(key, second, new byte[] { 1, 2, 3, 4 }, default));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, (await Store.GetAsync(key, default))!.Phases.ToArray());
    }

    [Fact]
    public async Task Release_of_a_record_with_phases_ends_its_lease_instead_of_deleting_it()
    {
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await Store.TryClaimAsync(Claim(key, owner), default);
        Assert.True(await Store.RecordPhasesAsync(key, owner, new byte[] { 7 }, default));
        Assert.True(await Store.ReleaseAsync(key, owner, default));

        var record = await Store.GetAsync(key, default);
        Assert.NotNull(record);
        Assert.Equal(IdempotencyRecordState.InFlight, record.State);

        // Another request with the same fingerprint takes it over at once and finds the phase; another fingerprint may not.
        Assert.Equal(ClaimStatus.InFlight, (await Store.TryClaimAsync(Claim(key, Guid.NewGuid(), "other"), default)).Status);
        var retry = await Store.TryClaimAsync(Claim(key, Guid.NewGuid()), default);
        Assert.Equal(ClaimStatus.Claimed, retry.Status);
        Assert.True(retry.TookOver);
        Assert.Equal(new byte[] { 7 }, (await Store.GetAsync(key, default))!.Phases.ToArray());

        // A record without phases is still deleted by its release.
        var plain = Guid.NewGuid().ToString("N");
        await Store.TryClaimAsync(Claim(plain, owner), default);
        Assert.True(await Store.ReleaseAsync(plain, owner, default));
        Assert.Null(await Store.GetAsync(plain, default));
    }

    [Fact]
    public async Task Completion_drops_the_phases()
    {
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await Store.TryClaimAsync(Claim(key, owner), default);
        await Store.RecordPhasesAsync(key, owner, new byte[] { 5 }, default);
        Assert.True(await Store.CompleteAsync(key, owner, new StoredResponse(200, null, new byte[] { 1 }), TimeSpan.FromHours(1), default));
        Assert.True((await Store.GetAsync(key, default))!.Phases.IsEmpty);
    }

    protected async Task AdvanceAsync(TimeSpan by)
    {
        if (UsesAppClock)
        {
            Time.Advance(by);
        }
        else
        {
            await Task.Delay(by);
        }
    }

    protected ClaimRequest Claim(string key, Guid owner, string fingerprint = "fp") => new(key, fingerprint, owner, ShortLease, TimeSpan.FromHours(24));
}

/// <summary>The joined transaction's store half, on the SQL stores.</summary>
public abstract class TransactionalStoreConformanceTests : RecoveryPointConformanceTests
{
    private ITransactionalIdempotencyStore Joined => (ITransactionalIdempotencyStore)Store;

    [Fact]
    public async Task Completion_in_a_transaction_is_seen_only_after_the_commit_and_undone_by_a_rollback()
    {
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await Store.TryClaimAsync(Claim(key, owner), default);

        await using (var connection = await Joined.OpenConnectionAsync(default))
        {
            await using var rolledBack = await Joined.BeginTransactionAsync(connection, default);
            Assert.True(await Joined.CompleteAsync(rolledBack, key, owner, new StoredResponse(201, null, new byte[] { 1 }), TimeSpan.FromHours(1), default));
            await rolledBack.RollbackAsync();
        }

        Assert.Equal(IdempotencyRecordState.InFlight, (await Store.GetAsync(key, default))!.State);

        await using (var connection = await Joined.OpenConnectionAsync(default))
        {
            await using var committed = await Joined.BeginTransactionAsync(connection, default);
            Assert.True(await Joined.CompleteAsync(committed, key, owner, new StoredResponse(201, null, new byte[] { 2 }), TimeSpan.FromHours(1), default));
            await committed.CommitAsync();
        }

        var record = await Store.GetAsync(key, default);
        Assert.Equal(IdempotencyRecordState.Completed, record!.State);
        Assert.Equal(new byte[] { 2 }, record.Response!.Body.ToArray());
    }

    [Fact]
    public async Task Completion_and_phases_in_a_transaction_are_fenced_after_a_takeover()
    {
        var key = Guid.NewGuid().ToString("N");
        var (stale, fresh) = (Guid.NewGuid(), Guid.NewGuid());
        await Store.TryClaimAsync(Claim(key, stale), default);
        await AdvanceAsync(ShortLease + TimeSpan.FromMilliseconds(200));
        Assert.True((await Store.TryClaimAsync(Claim(key, fresh), default)).TookOver);

        await using var connection = await Joined.OpenConnectionAsync(default);
        await using var transaction = await Joined.BeginTransactionAsync(connection, default);
        Assert.False(await Joined.RecordPhasesAsync(transaction, key, stale, new byte[] { 1 }, default));
        Assert.False(await Joined.CompleteAsync(transaction, key, stale, new StoredResponse(201, null, new byte[] { 1 }), TimeSpan.FromHours(1), default));
        Assert.True(await Joined.RecordPhasesAsync(transaction, key, fresh, new byte[] { 2 }, default));
        await transaction.CommitAsync();
        Assert.Equal(new byte[] { 2 }, (await Store.GetAsync(key, default))!.Phases.ToArray());
    }

    [Fact]
    public async Task Complete_and_commit_commits_the_owners_writes_with_the_completion_and_a_stale_owner_commits_nothing()
    {
        var (key, staleKey) = (Guid.NewGuid().ToString("N"), Guid.NewGuid().ToString("N"));
        var (owner, stale, fresh) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        await Store.TryClaimAsync(Claim(key, owner), default);
        await Store.TryClaimAsync(Claim(staleKey, stale), default);
        await AdvanceAsync(ShortLease + TimeSpan.FromMilliseconds(200));
        Assert.True((await Store.TryClaimAsync(Claim(staleKey, fresh), default)).TookOver);

        await using (var connection = await Joined.OpenConnectionAsync(default))
        {
            await DbCommands.ExecuteAsync(connection, null, "CREATE TABLE IF NOT EXISTS idem_conformance_rows (key TEXT PRIMARY KEY)");

            // The owner that still holds its key: its write and the completion commit together.
            await using (var transaction = await Joined.BeginTransactionAsync(connection, default))
            {
                await DbCommands.ExecuteAsync(connection, transaction, "INSERT INTO idem_conformance_rows (key) VALUES (@key)", key);
                Assert.True(await Joined.CompleteAndCommitAsync(transaction, key, owner, new StoredResponse(201, null, new byte[] { 1 }), TimeSpan.FromHours(1), default));
                Assert.True(Joined.IsCompleted(transaction));
            }

            // The stale owner: nothing of its transaction may commit, and the connection stays usable after the rollback.
            await using (var transaction = await Joined.BeginTransactionAsync(connection, default))
            {
                await DbCommands.ExecuteAsync(connection, transaction, "INSERT INTO idem_conformance_rows (key) VALUES (@key)", staleKey);
                Assert.False(await Joined.CompleteAndCommitAsync(transaction, staleKey, stale, new StoredResponse(201, null, new byte[] { 2 }), TimeSpan.FromHours(1), default));
                await transaction.RollbackAsync();
            }

            Assert.Equal(1L, await CountRowsAsync(connection, key));
            Assert.Equal(0L, await CountRowsAsync(connection, staleKey));
        }

        var completed = await Store.GetAsync(key, default);
        Assert.Equal(IdempotencyRecordState.Completed, completed!.State);
        Assert.Equal(new byte[] { 1 }, completed.Response!.Body.ToArray());
        var takenOver = await Store.GetAsync(staleKey, default);
        Assert.Equal(IdempotencyRecordState.InFlight, takenOver!.State);
        Assert.Equal(fresh, takenOver.OwnerToken);
    }

    private static async Task<long> CountRowsAsync(DbConnection connection, string key) =>
        Convert.ToInt64(await DbCommands.ScalarAsync(connection, null, "SELECT COUNT(*) FROM idem_conformance_rows WHERE key = @key", key), System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async Task A_connection_to_another_database_is_refused()
    {
        await using var other = await OpenOtherDatabaseAsync();
        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () => await Joined.BeginTransactionAsync(other, default));
        Assert.Contains("own database", error.Message, StringComparison.Ordinal);
    }

    protected abstract Task<DbConnection> OpenOtherDatabaseAsync();
}

public sealed class InMemoryRecoveryPointTests : RecoveryPointConformanceTests
{
    protected override bool UsesAppClock => true;

    protected override ValueTask<IRecoveryPointStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IRecoveryPointStore>(new InMemoryIdempotencyStore(timeProvider));
}

public sealed class SqliteTransactionalStoreTests : TransactionalStoreConformanceTests, IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("idem-joined-store-").FullName;

    protected override bool UsesAppClock => true;

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    protected override ValueTask<IRecoveryPointStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IRecoveryPointStore>(new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = Path.Combine(_directory, "store.db") }, timeProvider));

    protected override Task<DbConnection> OpenOtherDatabaseAsync() =>
        Task.FromResult<DbConnection>(new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(_directory, "other.db")}"));

    [Fact]
    public async Task A_version_1_file_is_upgraded_to_keep_phases()
    {
        var path = Path.Combine(_directory, "v1.db");
        await using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = """
                PRAGMA journal_mode = WAL;
                CREATE TABLE idem_records (key TEXT NOT NULL PRIMARY KEY, state INTEGER NOT NULL, fingerprint TEXT NOT NULL, owner BLOB NOT NULL,
                    lease_expires_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, status_code INTEGER NULL, headers BLOB NULL, body BLOB NULL,
                    body_omitted INTEGER NOT NULL DEFAULT 0, took_over INTEGER NOT NULL DEFAULT 0);
                PRAGMA user_version = 1;
                """;
            await command.ExecuteNonQueryAsync();
        }

        await using var store = new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = path });
        var owner = Guid.NewGuid();
        await store.TryClaimAsync(new ClaimRequest("k", "fp", owner, TimeSpan.FromSeconds(10), TimeSpan.FromHours(1)), default);
        Assert.True(await store.RecordPhasesAsync("k", owner, new byte[] { 3 }, default));
        Assert.Equal(new byte[] { 3 }, (await store.GetAsync("k", default))!.Phases.ToArray());
    }

    [Fact]
    public async Task A_version_2_file_is_upgraded_and_its_records_replay_with_unknown_metadata()
    {
        var path = Path.Combine(_directory, "v2.db");
        await using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = """
                PRAGMA journal_mode = WAL;
                CREATE TABLE idem_records (key TEXT NOT NULL PRIMARY KEY, state INTEGER NOT NULL, fingerprint TEXT NOT NULL, owner BLOB NOT NULL,
                    lease_expires_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, status_code INTEGER NULL, headers BLOB NULL, body BLOB NULL,
                    body_omitted INTEGER NOT NULL DEFAULT 0, took_over INTEGER NOT NULL DEFAULT 0, phases BLOB NULL);
                INSERT INTO idem_records (key, state, fingerprint, owner, lease_expires_at, expires_at, status_code, headers, body)
                    VALUES ('old', 2, 'fp', zeroblob(16), 0, 4102444800000, 201, NULL, X'7B7D');
                PRAGMA user_version = 2;
                """;
            await command.ExecuteNonQueryAsync();
        }

        await using var store = new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = path });
        var replay = await store.TryClaimAsync(new ClaimRequest("old", "fp", Guid.NewGuid(), TimeSpan.FromSeconds(10), TimeSpan.FromHours(1)) { Metadata = IdempotencyRecordMetadata.Create("u", "POST /x") }, default);
        Assert.Equal(ClaimStatus.Completed, replay.Status);
        Assert.Equal(201, replay.Record!.Response!.StatusCode);
        Assert.Null(replay.Record.Metadata); // written before: unknown, and a replay does not invent it
        var owner = Guid.NewGuid();
        await store.TryClaimAsync(new ClaimRequest("new", "fp", owner, TimeSpan.FromSeconds(10), TimeSpan.FromHours(1)) { Metadata = IdempotencyRecordMetadata.Create("u", "POST /x") }, default);
        Assert.Equal("POST /x", (await store.GetAsync("new", default))!.Metadata!.Operation);
    }
}

[Collection(PostgreSqlServerGroup.Name)]
public sealed class PostgreSqlTransactionalStoreTests(PostgreSqlServer server) : TransactionalStoreConformanceTests
{
    private readonly string _schema = PostgreSqlServer.NewName("joined");

    protected override bool UsesAppClock => false;

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
    }

    protected override async ValueTask<IRecoveryPointStore> CreateStoreAsync(TimeProvider timeProvider)
    {
        var store = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions
        {
            ConnectionString = server.ConnectionString,
            SchemaName = _schema,
            NotificationChannel = _schema + "_changed",
        });
        await store.MigrateAsync(CancellationToken.None);
        return store;
    }

    protected override Task<DbConnection> OpenOtherDatabaseAsync() =>
        Task.FromResult<DbConnection>(new Npgsql.NpgsqlConnection(new Npgsql.NpgsqlConnectionStringBuilder(server.ConnectionString) { Database = "some_other_db" }.ConnectionString));
}
