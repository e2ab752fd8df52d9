using System.Data.Common;
using Idem.PostgreSql;
using Idem.TestUtils;
using Microsoft.EntityFrameworkCore;
using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace Idem.DataLayer.Tests;

[Collection(SharedPostgreSql.Name)]
public sealed class PostgreSqlDataLayerTests(PostgreSqlServer server, ITestOutputHelper output) : DataLayerTests(output)
{
    private NpgsqlDataSource? _dataSource;
    private string _connectionString = "";

    public override async Task InitializeAsync()
    {
        _connectionString = new NpgsqlConnectionStringBuilder(await server.CreateDatabaseAsync()) { MaxPoolSize = 200 }.ConnectionString;
        _dataSource = NpgsqlDataSource.Create(_connectionString);
        await using var command = _dataSource.CreateCommand("""
            CREATE TABLE chats (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, participants_key text NOT NULL UNIQUE, title text CHECK (title <> 'forbidden'));
            CREATE TABLE communities (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, slug text COLLATE "C" NOT NULL UNIQUE);
            CREATE TABLE tags (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE);
            CREATE TABLE shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, reference text NOT NULL UNIQUE, destination_city text NOT NULL);
            """);
        await command.ExecuteNonQueryAsync();
    }

    public override async Task DisposeAsync()
    {
        if (_dataSource is not null)
        {
            await _dataSource.DisposeAsync();
        }
    }

    protected override async Task<DbConnection> OpenAsync() => await _dataSource!.OpenConnectionAsync();

    protected override TestContext NewContext() =>
        new(new DbContextOptionsBuilder<TestContext>().UseNpgsql(_connectionString).Options);

    protected override Task<CreateOrGetResult<long>> CreateOrGetChatAsync(DbConnection connection, DbTransaction? transaction, string key, string? title = null) =>
        ((NpgsqlConnection)connection).CreateOrGetAsync(Chats, [key, title is null ? new NpgsqlParameter { Value = DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text } : title], r => r.GetInt64(0), (NpgsqlTransaction?)transaction);

    protected override Task<(long Id, string Slug)> InsertCommunityAsync(DbConnection connection, DbTransaction? transaction, string name, SlugOptions options) =>
        ((NpgsqlConnection)connection).InsertWithUniqueSlugAsync(
            new UniqueSlugDefinition("communities", "slug", columns: ["name"], returning: ["id", "slug"]) { Options = options, Logger = SlugLogger },
            name, [name], r => (r.GetInt64(0), r.GetString(1)), (NpgsqlTransaction?)transaction);

    protected override bool IsUniqueViolation(Exception exception) => exception.IsUniqueViolation();

    protected override void AssertCheckViolation(Exception exception) =>
        Assert.Equal(PostgresErrorCodes.CheckViolation, Assert.IsType<PostgresException>(exception).SqlState);

    [Fact]
    public async Task The_data_source_overload_and_a_named_constraint_are_recognised()
    {
        var first = await _dataSource!.CreateOrGetAsync(Chats, ["mallory,oscar", "t"], r => r.GetInt64(0), CancellationToken.None);
        var second = await _dataSource!.CreateOrGetAsync(Chats, [NaturalKey.FromSet(["oscar", "mallory"]), "t"], r => r.GetInt64(0), CancellationToken.None);
        Assert.True(first.Created);
        Assert.False(second.Created);
        Assert.Equal(first.Value, second.Value);

        await using var connection = await OpenAsync();
        var error = await Assert.ThrowsAsync<PostgresException>(() => ScalarAsync(connection, "INSERT INTO chats (participants_key) VALUES (@key)", "mallory,oscar"));
        Assert.True(error.IsUniqueViolation("chats_participants_key_key"));
        Assert.False(error.IsUniqueViolation("another_constraint"));
    }
    [Fact]
    public async Task A_row_committed_after_the_statements_snapshot_is_read_again_and_never_answered_with_nothing()
    {
        // Under READ COMMITTED the one statement's read half sees its snapshot: a conflicting row committed by a
        // concurrent transaction after the statement began (the insert waited for it) is not in it, so the statement
        // returns no row. The helper reads once more; the bare statement (the naive variant) answers nothing.
        using var counters = new DataCounters("chats");
        var helper = await RaceTheCommitAsync("quinn,rose", connection => CreateOrGetChatAsync(connection, null, "quinn,rose"));
        Assert.False(helper.Answer.Created);
        Assert.Equal(helper.CommittedId, helper.Answer.Value);
        Assert.Equal(1, counters.Conflicts); // the second read ran
        Assert.Equal(1L, await CountAsync("SELECT count(*) FROM chats WHERE participants_key = 'quinn,rose'"));

        var bare = await RaceTheCommitAsync("sam,tess", async connection =>
        {
            await using var command = new NpgsqlCommand(
                "WITH idem_found AS (SELECT id FROM chats WHERE participants_key = @key), " +
                "idem_inserted AS (INSERT INTO chats (participants_key) SELECT @key WHERE NOT EXISTS (SELECT 1 FROM idem_found) ON CONFLICT (participants_key) DO NOTHING RETURNING id) " +
                "SELECT id, FALSE FROM idem_found UNION ALL SELECT id, TRUE FROM idem_inserted",
                (NpgsqlConnection)connection);
            command.Parameters.AddWithValue("key", "sam,tess");
            await using var reader = await command.ExecuteReaderAsync();
            return await reader.ReadAsync() ? new CreateOrGetResult<long>(reader.GetInt64(0), reader.GetBoolean(1)) : new CreateOrGetResult<long>(0, false);
        });
        Output.WriteLine($"bare statement after the concurrent commit: id {bare.Answer.Value} (0 = no row)");
        Assert.Equal(0, bare.Answer.Value);
    }

    [Fact]
    public async Task A_kept_command_is_prepared_again_when_its_values_types_change_or_its_connection_reopens()
    {
        // On a connection kept open the helper keeps its prepared command. The server's prepared statement has its
        // parameters' types, so a value of another type (an int, then a long) must prepare it again.
        await using (var create = _dataSource!.CreateCommand("CREATE TABLE counters (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE, amount bigint)"))
        {
            await create.ExecuteNonQueryAsync();
        }

        var counters = new CreateOrGetDefinition("counters", ["name", "amount"], ["name"], ["amount"]);
        await using (var connection = await _dataSource.OpenConnectionAsync())
        {
            foreach (var (name, amount) in new (string, object)[] { ("a", 1), ("b", 5_000_000_000L), ("c", 2), ("a", 7L) })
            {
                var result = await connection.CreateOrGetAsync(counters, [name, amount], r => r.GetInt64(0));
                Assert.Equal(name == "a" ? 1L : Convert.ToInt64(amount, System.Globalization.CultureInfo.InvariantCulture), result.Value);
            }

            await connection.CloseAsync();
            await connection.OpenAsync();
            Assert.False((await connection.CreateOrGetAsync(counters, ["b", 3], r => r.GetInt64(0))).Created);
            Assert.True((await connection.CreateOrGetAsync(counters, ["d", 4L], r => r.GetInt64(0))).Created);
        }

        Assert.Equal(4L, await CountAsync("SELECT count(*) FROM counters"));

        // Naive variant: one kept, prepared command whose value's type changes without preparing it again.
        await using (var connection = await _dataSource.OpenConnectionAsync())
        {
            await using var command = new NpgsqlCommand("INSERT INTO counters (name, amount) VALUES (@name, @amount)", connection);
            command.Parameters.AddWithValue("name", "naive-int");
            command.Parameters.AddWithValue("amount", 1);
            await command.PrepareAsync();
            await command.ExecuteNonQueryAsync();
            command.Parameters[0].Value = "naive-long";
            command.Parameters[1].Value = 5_000_000_000L;
            var error = await Record.ExceptionAsync(() => command.ExecuteNonQueryAsync());
            Output.WriteLine($"naive kept command after its value's type changed: {error?.GetType().Name}: {error?.Message}");
            Assert.NotNull(error);
        }
    }

    /// <summary>
    /// Opens a transaction that inserts the key, starts <paramref name="call"/> on another connection, waits until that
    /// call's statement is blocked on the uncommitted row, then commits.
    /// </summary>
    private async Task<(CreateOrGetResult<long> Answer, long CommittedId)> RaceTheCommitAsync(string key, Func<DbConnection, Task<CreateOrGetResult<long>>> call)
    {
        await using var first = await _dataSource!.OpenConnectionAsync();
        await using var transaction = await first.BeginTransactionAsync();
        await using var insert = new NpgsqlCommand("INSERT INTO chats (participants_key) VALUES (@key) RETURNING id", first, transaction);
        insert.Parameters.AddWithValue("key", key);
        var committedId = (long)(await insert.ExecuteScalarAsync())!;

        await using var second = await _dataSource.OpenConnectionAsync();
        var secondPid = second.ProcessID;
        var answer = call(second);
        await using (var watcher = await _dataSource.OpenConnectionAsync())
        {
            var blocked = false;
            for (var i = 0; i < 200 && !blocked && !answer.IsCompleted; i++)
            {
                await using var waiting = new NpgsqlCommand("SELECT count(*) FROM pg_stat_activity WHERE pid = @pid AND wait_event_type = 'Lock'", watcher);
                waiting.Parameters.AddWithValue("pid", secondPid);
                blocked = (long)(await waiting.ExecuteScalarAsync())! == 1;
                if (!blocked)
                {
                    await Task.Delay(50);
                }
            }

            Assert.True(blocked, "the second statement never waited for the uncommitted row");
        }

        await transaction.CommitAsync();
        return (await answer, committedId);
    }
}
