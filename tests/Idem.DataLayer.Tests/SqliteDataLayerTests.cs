using System.Data.Common;
using Idem.EntityFrameworkCore;
using Idem.Sqlite;
using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using Xunit;
using Xunit.Abstractions;

namespace Idem.DataLayer.Tests;

public sealed class SqliteDataLayerTests(ITestOutputHelper output) : DataLayerTests(output)
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "idem-data-" + Guid.NewGuid().ToString("N")[..12]);
    private string _connectionString = "";

    public override async Task InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        _connectionString = new SqliteConnectionStringBuilder { DataSource = Path.Combine(_directory, "data.db"), DefaultTimeout = 60, Pooling = true }.ConnectionString;
        await using var connection = (SqliteConnection)await OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = """
            PRAGMA journal_mode = WAL;
            CREATE TABLE chats (id INTEGER PRIMARY KEY, participants_key TEXT NOT NULL UNIQUE, title TEXT CHECK (title <> 'forbidden'));
            CREATE TABLE communities (id INTEGER PRIMARY KEY, name TEXT NOT NULL, slug TEXT NOT NULL UNIQUE);
            CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
            CREATE TABLE shipments (id INTEGER PRIMARY KEY, reference TEXT NOT NULL UNIQUE, destination_city TEXT NOT NULL);
            CREATE TABLE tickets (id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, number INTEGER NOT NULL, UNIQUE (kind, number));
            CREATE TABLE notes (id INTEGER PRIMARY KEY, ref TEXT NOT NULL UNIQUE, status TEXT NOT NULL DEFAULT 'Draft', created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')));
            """;
        await command.ExecuteNonQueryAsync();
    }

    public override Task DisposeAsync()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
        return Task.CompletedTask;
    }

    protected override async Task<DbConnection> OpenAsync()
    {
        var connection = new SqliteConnection(_connectionString);
        await connection.OpenAsync();
        return connection;
    }

    protected override TestContext NewContext() =>
        new(new DbContextOptionsBuilder<TestContext>().UseSqlite(_connectionString).Options);

    protected override HiddenChatsContext NewHiddenChatsContext() =>
        new(new DbContextOptionsBuilder<HiddenChatsContext>().UseSqlite(_connectionString).Options);

    protected override Task<CreateOrGetResult<long>> CreateOrGetChatAsync(DbConnection connection, DbTransaction? transaction, string key, string? title = null) =>
        ((SqliteConnection)connection).CreateOrGetAsync(Chats, [key, title], r => r.GetInt64(0), (SqliteTransaction?)transaction);

    protected override Task<(long Id, string Slug)> InsertCommunityAsync(DbConnection connection, DbTransaction? transaction, string name, SlugOptions options) =>
        ((SqliteConnection)connection).InsertWithUniqueSlugAsync(
            new UniqueSlugDefinition("communities", "slug", columns: ["name"], returning: ["id", "slug"]) { Options = options, Logger = SlugLogger },
            name, [name], r => (r.GetInt64(0), r.GetString(1)), (SqliteTransaction?)transaction);

    [Fact]
    public async Task Through_EF_Core_each_first_statement_sends_exactly_the_statements_it_promises()
    {
        // Outside a transaction the read goes first (an existing row costs a read, not a write-lock attempt), unless the
        // last four calls all created their rows: then the insert goes first, and a call that meets an existing row reads
        // it after. The streak belongs to the entity type of the model, which other tests share: the first four calls
        // create their rows, which brings it to the insert from any state, so their own statements are not compared.
        var sent = new SentCommands();
        await using var db = new TestContext(new DbContextOptionsBuilder<TestContext>().UseSqlite(_connectionString).AddInterceptors(sent).Options);
        foreach (var key in new[] { "w1", "w2", "w3", "w4" })
        {
            Assert.True((await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = "ef-streak-" + key }, c => c.ParticipantsKey)).Created);
        }

        (string Key, bool Created, string Statements)[] calls =
        [
            ("w5", true, "INSERT"), ("w6", true, "INSERT"),
            ("w1", false, "INSERT SELECT"), // breaks the streak: the insert met the row, then the read
            ("w2", false, "SELECT"), ("w3", false, "SELECT"), ("w4", false, "SELECT"), ("w5", false, "SELECT"), ("w6", false, "SELECT"),
            ("w7", true, "SELECT INSERT"), ("w8", true, "SELECT INSERT"),
        ];
        var actual = new List<string>();
        foreach (var (key, created, _) in calls)
        {
            sent.Clear();
            Assert.Equal(created, (await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = "ef-streak-" + key }, c => c.ParticipantsKey)).Created);
            actual.Add(sent.Statements);
        }

        Output.WriteLine(string.Join(" | ", actual));
        Assert.Equal(calls.Select(c => c.Statements), actual);
        Assert.Equal(8L, await CountAsync("SELECT count(*) FROM chats WHERE participants_key LIKE 'ef-streak-%'"));
    }

    /// <summary>The first word of each command EF Core sends, from its own interceptor.</summary>
    private sealed class SentCommands : Microsoft.EntityFrameworkCore.Diagnostics.DbCommandInterceptor
    {
        private readonly List<string> _sent = [];

        public string Statements => string.Join(" ", _sent);

        public void Clear() => _sent.Clear();

        public override ValueTask<Microsoft.EntityFrameworkCore.Diagnostics.InterceptionResult<DbDataReader>> ReaderExecutingAsync(
            DbCommand command, Microsoft.EntityFrameworkCore.Diagnostics.CommandEventData eventData, Microsoft.EntityFrameworkCore.Diagnostics.InterceptionResult<DbDataReader> result, CancellationToken cancellationToken = default)
        {
            _sent.Add(command.CommandText.TrimStart().Split(' ', '\n')[0]);
            return ValueTask.FromResult(result);
        }
    }

    [Fact]
    public async Task Commands_kept_prepared_on_a_connection_leave_nothing_on_the_pooled_handle_when_it_closes()
    {
        // The helpers keep their commands prepared on a connection the caller keeps open. A closed connection hands its
        // SQLite handle back to the pool, where the next connection takes it: no statement of ours may stay on it.
        // A pool of its own (another timeout), whose one handle lists its statements from the moment it is opened.
        var pooled = new SqliteConnectionStringBuilder(_connectionString) { DefaultTimeout = 59 }.ConnectionString;
        await using (var first = new SqliteConnection(pooled))
        {
            await first.OpenAsync();
            first.Handle!.enable_sqlite3_next_stmt(true);
        }

        var connection = new SqliteConnection(pooled);
        await using (connection)
        {
            for (var cycle = 0; cycle < 3; cycle++)
            {
                await connection.OpenAsync();
                Assert.True((await CreateOrGetChatAsync(connection, null, $"kept-{cycle}")).Created);
                Assert.False((await CreateOrGetChatAsync(connection, null, $"kept-{cycle}")).Created);
                await using (var transaction = (SqliteTransaction)await connection.BeginTransactionAsync())
                {
                    Assert.False((await CreateOrGetChatAsync(connection, transaction, $"kept-{cycle}")).Created);
                    Assert.True((await CreateOrGetChatAsync(connection, transaction, $"kept-rolled-back-{cycle}")).Created);
                    await transaction.RollbackAsync();
                }

                var slugs = new UniqueSlugDefinition("communities", "slug", columns: ["name"], returning: ["id", "slug"]);
                Assert.Equal(cycle == 0 ? "kept" : $"kept-{cycle}", await connection.InsertWithUniqueSlugAsync(slugs, "Kept", ["Kept"], r => r.GetString(1)));
                await connection.CloseAsync();
                Assert.Null(await StatementLeftOnPooledHandleAsync(pooled));
            }
        }

        Assert.Equal(3L, await CountAsync("SELECT count(*) FROM chats WHERE participants_key LIKE 'kept-%'"));

        // Naive variant: a command kept across a close and reopen is prepared again on the new handle, but the connection
        // no longer disposes it when it closes, so its statement stays on the handle the next connection takes.
        var naive = new SqliteConnection(pooled);
        await using (naive)
        {
            await naive.OpenAsync();
            await using var command = naive.CreateCommand();
            command.CommandText = "SELECT count(*) FROM chats";
            await command.ExecuteScalarAsync();
            await naive.CloseAsync();
            await naive.OpenAsync();
            await command.ExecuteScalarAsync();
            await naive.CloseAsync();
            var left = await StatementLeftOnPooledHandleAsync(pooled);
            Output.WriteLine($"naive kept command, statement left on the pooled handle: {left}");
            Assert.Equal("SELECT count(*) FROM chats", left);
        }
    }

    /// <summary>The SQL of a statement still prepared on the handle a new connection takes from the pool, if any.</summary>
    private static async Task<string?> StatementLeftOnPooledHandleAsync(string connectionString)
    {
        await using var next = new SqliteConnection(connectionString);
        await next.OpenAsync();
        var statement = SQLitePCL.raw.sqlite3_next_stmt(next.Handle, null);
        return statement is null ? null : SQLitePCL.raw.sqlite3_sql(statement).utf8_to_string();
    }

    protected override bool IsUniqueViolation(Exception exception) => exception.IsUniqueViolation();

    protected override void AssertCheckViolation(Exception exception)
    {
        var sqlite = Assert.IsType<SqliteException>(exception);
        Assert.Equal(19, sqlite.SqliteErrorCode);
        Assert.Equal(275, sqlite.SqliteExtendedErrorCode); // SQLITE_CONSTRAINT_CHECK
    }
}
