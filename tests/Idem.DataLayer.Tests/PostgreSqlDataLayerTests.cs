using System.Data.Common;
using Idem.EntityFrameworkCore;
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
            CREATE TABLE tickets (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind integer NOT NULL, number integer NOT NULL, UNIQUE (kind, number));
            CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ref text NOT NULL UNIQUE, status text NOT NULL DEFAULT 'Draft', created_at timestamptz NOT NULL DEFAULT now());
            """);
        await command.ExecuteNonQueryAsync();
    }

    public override async Task DisposeAsync()
    {
        if (_dataSource is not null)
        {
            await _dataSource.DisposeAsync();
        }

        // EF Core keeps a pool per connection string, and a 150-way race leaves up to 150 idle connections in this test's
        // pool: ended with the database, or a few races in a row reach the server's max_connections.
        var database = new NpgsqlConnectionStringBuilder(_connectionString).Database;
        await server.ExecuteAsync($"DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
    }

    protected override async Task<DbConnection> OpenAsync() => await _dataSource!.OpenConnectionAsync();

    protected override TestContext NewContext() =>
        new(new DbContextOptionsBuilder<TestContext>().UseNpgsql(_connectionString).Options);

    protected override HiddenChatsContext NewHiddenChatsContext() =>
        new(new DbContextOptionsBuilder<HiddenChatsContext>().UseNpgsql(_connectionString).Options);

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
    /// <summary>How a fresh definition is brought to each first statement: four calls that all created, or all found, their row.</summary>
    public static TheoryData<string> FirstStatements => new() { "combined", "read", "insert" };

    [Theory]
    [MemberData(nameof(FirstStatements))]
    public async Task A_row_committed_after_the_statements_snapshot_is_read_again_and_never_answered_with_nothing(string first)
    {
        // Under READ COMMITTED a statement sees its snapshot: a conflicting row committed by a concurrent transaction
        // after the statement began (the insert waited for it) is not in it, so the statement returns no row. Whichever
        // statement the helper sends first, it reads once more; the bare combined statement (the naive variant) answers
        // nothing.
        var chats = await PrimedChatsAsync(first);
        using var counters = new DataCounters("chats");
        var key = "quinn,rose," + first;
        var helper = await RaceTheCommitAsync(key, connection => ((NpgsqlConnection)connection).CreateOrGetAsync(chats, [key, "t"], r => r.GetInt64(0)));
        Assert.False(helper.Answer.Created);
        Assert.Equal(helper.CommittedId, helper.Answer.Value);
        // The read first and the combined statement know the row was absent before: a resolved conflict. The plain insert
        // first cannot tell a concurrent insert from a row that was there.
        Assert.Equal(first == "insert" ? 0 : 1, counters.Conflicts);
        Assert.Equal(1L, await CountAsync($"SELECT count(*) FROM chats WHERE participants_key = '{key}'"));

        var bareKey = "sam,tess," + first;
        var bare = await RaceTheCommitAsync(bareKey, async connection =>
        {
            await using var command = new NpgsqlCommand(
                "WITH idem_found AS (SELECT id FROM chats WHERE participants_key = @key), " +
                "idem_inserted AS (INSERT INTO chats (participants_key) SELECT @key WHERE NOT EXISTS (SELECT 1 FROM idem_found) ON CONFLICT (participants_key) DO NOTHING RETURNING id) " +
                "SELECT id, FALSE FROM idem_found UNION ALL SELECT id, TRUE FROM idem_inserted",
                (NpgsqlConnection)connection);
            command.Parameters.AddWithValue("key", bareKey);
            await using var reader = await command.ExecuteReaderAsync();
            return await reader.ReadAsync() ? new CreateOrGetResult<long>(reader.GetInt64(0), reader.GetBoolean(1)) : new CreateOrGetResult<long>(0, false);
        });
        Output.WriteLine($"bare statement after the concurrent commit: id {bare.Answer.Value} (0 = no row)");
        Assert.Equal(0, bare.Answer.Value);
    }

    [Theory]
    [MemberData(nameof(FirstStatements))]
    public async Task Whichever_statement_goes_first_150_concurrent_calls_for_a_new_and_an_existing_key_return_one_id_and_one_row(string first)
    {
        foreach (var existing in new[] { false, true })
        {
            var key = $"uma,victor,{first},{existing}";
            long? before = existing ? (await _dataSource!.CreateOrGetAsync(Chats, [key, "t"], r => r.GetInt64(0), CancellationToken.None)).Value : null;
            var chats = await PrimedChatsAsync(first); // all 150 read the primed first statement before any of them ends
            var answers = await RaceAsync(150, (connection, _) => ((NpgsqlConnection)connection).CreateOrGetAsync(chats, [key, "t"], r => r.GetInt64(0)));

            Assert.True(answers.Errors.IsEmpty, string.Join("\n", answers.Errors));
            var id = Assert.Single(answers.Values.Select(a => a.Value).Distinct());
            Assert.Equal(existing ? 0 : 1, answers.Values.Count(a => a.Created));
            if (before is { } existingId)
            {
                Assert.Equal(existingId, id);
            }

            Assert.Equal(1L, await CountAsync($"SELECT count(*) FROM chats WHERE participants_key = '{key}'"));
        }
    }

    [Fact]
    public async Task Each_first_statement_sends_exactly_the_statements_it_promises()
    {
        // Round trips counted by Npgsql's own tracing: after four calls that created their rows the next sends only
        // INSERT … ON CONFLICT DO NOTHING; after four that found theirs, only the SELECT; a call that breaks a streak
        // costs one more statement and sends the next call back to the combined one.
        var chats = new CreateOrGetDefinition("chats", ["participants_key", "title"], ["participants_key"], ["id"]);
        await using var connection = await _dataSource!.OpenConnectionAsync();
        using var sent = new SentStatements(connection.Database);
        var actual = new List<string>();
        foreach (var (key, created, _) in StreakCalls)
        {
            actual.Add(await sent.CountAsync(async () => Assert.Equal(created, (await connection.CreateOrGetAsync(chats, ["streak-" + key, "t"], r => r.GetInt64(0))).Created)));
        }

        Output.WriteLine(string.Join(" | ", actual));
        Assert.Equal(StreakCalls.Select(e => e.Statements), actual);
    }

    [Fact]
    public async Task Through_EF_Core_each_first_statement_sends_exactly_the_statements_it_promises()
    {
        // The same streaks through DbSet.CreateOrGetAsync. Its streak belongs to the entity type of the model, which
        // other tests share: the first four calls create their rows, which brings it to the plain insert from any state,
        // so their own statements are not compared.
        await using var db = NewContext();
        await db.Database.OpenConnectionAsync();
        using var sent = new SentStatements(db.Database.GetDbConnection().Database);
        foreach (var (key, created, _) in StreakCalls.Take(4))
        {
            Assert.Equal(created, (await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = "ef-streak-" + key }, c => c.ParticipantsKey)).Created);
        }

        var actual = new List<string>();
        foreach (var (key, created, _) in StreakCalls.Skip(4))
        {
            actual.Add(await sent.CountAsync(async () => Assert.Equal(created, (await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = "ef-streak-" + key }, c => c.ParticipantsKey)).Created)));
        }

        Output.WriteLine(string.Join(" | ", actual));
        Assert.Equal(StreakCalls.Skip(4).Select(e => e.Statements), actual);
    }

    /// <summary>A fresh streak's calls and the statements each sends, by their first word.</summary>
    private static readonly (string Key, bool Created, string Statements)[] StreakCalls =
    [
        ("w1", true, "WITH"), ("w2", true, "WITH"), ("w3", true, "WITH"), ("w4", true, "WITH"),
        ("w5", true, "INSERT"), ("w6", true, "INSERT"),
        ("w1", false, "INSERT SELECT"), // breaks the streak: the insert met the row, then the read
        ("w2", false, "WITH"), ("w3", false, "WITH"), ("w4", false, "WITH"),
        ("w5", false, "SELECT"), ("w6", false, "SELECT"),
        ("w7", true, "SELECT WITH"), // the read missed, then the combined statement inserted
        ("w8", true, "WITH"),
    ];

    /// <summary>The first word of each statement Npgsql sends to one database, from its tracing.</summary>
    private sealed class SentStatements : IDisposable
    {
        private readonly System.Diagnostics.ActivityListener _listener;
        private readonly List<string> _sent = [];

        public SentStatements(string database)
        {
            _listener = new System.Diagnostics.ActivityListener
            {
                ShouldListenTo = source => source.Name == "Npgsql",
                Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllData,
                ActivityStopped = activity =>
                {
                    // This test's database only: tests of other classes run at the same time.
                    if (activity.GetTagItem("db.namespace") as string == database && activity.GetTagItem("db.query.text") is string text)
                    {
                        lock (_sent)
                        {
                            _sent.Add(text.TrimStart().Split(' ')[0]);
                        }
                    }
                },
            };
            System.Diagnostics.ActivitySource.AddActivityListener(_listener);
        }

        /// <summary>Runs <paramref name="call"/> and returns the statements it sent, space-separated.</summary>
        public async Task<string> CountAsync(Func<Task> call)
        {
            lock (_sent)
            {
                _sent.Clear();
            }

            await call();
            lock (_sent)
            {
                return string.Join(" ", _sent);
            }
        }

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>
    /// A definition of its own (the first statement is chosen per definition) after four calls that all created their
    /// rows ("insert"), all found them ("read"), or none ("combined").
    /// </summary>
    private async Task<CreateOrGetDefinition> PrimedChatsAsync(string first)
    {
        var chats = new CreateOrGetDefinition("chats", ["participants_key", "title"], ["participants_key"], ["id"]);
        if (first == "combined")
        {
            return chats;
        }

        await using var connection = await _dataSource!.OpenConnectionAsync();
        var prefix = "primer-" + Guid.NewGuid().ToString("N");
        if (first == "read")
        {
            await _dataSource.CreateOrGetAsync(Chats, [prefix, "t"], r => r.GetInt64(0), CancellationToken.None);
        }

        for (var i = 0; i < 4; i++)
        {
            var created = first == "insert";
            Assert.Equal(created, (await connection.CreateOrGetAsync(chats, [created ? prefix + i : prefix, "t"], r => r.GetInt64(0))).Created);
        }

        return chats;
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
