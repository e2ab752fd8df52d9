using System.Data.Common;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Idem.Cli.Tests;

/// <summary>
/// <c>idem dedupe</c> on seeded tables that already hold duplicates and child rows, on SQLite and PostgreSQL: report,
/// dry runs that change nothing, merge re-pointing every foreign key, backfill, lock, idempotent second runs, and bad
/// names refused with exit 2.
/// </summary>
[Collection(CliServers.Name)]
public sealed class DedupeTests(CliFixture fixture) : IAsyncLifetime
{
    private string _sqlitePath = "";
    private string _postgres = "";

    public async Task InitializeAsync()
    {
        _sqlitePath = Path.Combine(Directory.CreateTempSubdirectory("idem-dedupe-").FullName, "app.db");
        _postgres = await fixture.Postgres.CreateDatabaseAsync();
    }

    public Task DisposeAsync()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(Path.GetDirectoryName(_sqlitePath)!, recursive: true);
        return Task.CompletedTask;
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgresql")]
    public async Task Chats_duplicated_in_any_participant_order_are_reported_merged_with_their_messages_backfilled_and_locked(string database)
    {
        await SeedChatsAsync(database);
        string[] chats = ["--database", database, "--connection", Connection(database), "--table", "chats", "--sorted-set", "user_a,user_b"];

        var report = await IdemCli.RunAsync(["dedupe", "report", .. chats, "--json"]);
        Assert.True(report.ExitCode == 1, report.ToString());
        var group = Assert.Single(report.Json.GetProperty("groups").EnumerateArray());
        Assert.Equal("alice,bob", group.GetProperty("key").GetString());
        Assert.Equal([1L, 2L, 4L], group.GetProperty("ids").EnumerateArray().Select(i => i.GetInt64())); // oldest first by the primary key
        var before = await SnapshotAsync(database);

        // Backfill adds and fills the key column; locking over the remaining duplicates is refused (exit 1) and builds nothing.
        var backfill = await IdemCli.RunAsync(["dedupe", "backfill", .. chats, "--key-column", "participants_key", "--apply", "--json"]);
        Assert.True(backfill.ExitCode == 0, backfill.ToString());
        Assert.Equal(6, backfill.Json.GetProperty("statements").GetArrayLength()); // ALTER TABLE + 5 rows
        Assert.Equal("alice,bob", await ScalarAsync(database, "SELECT participants_key FROM chats WHERE id = 2"));
        var refused = await IdemCli.RunAsync(["dedupe", "lock", .. chats, "--key-column", "participants_key", "--apply", "--json"]);
        Assert.True(refused.ExitCode == 1, refused.ToString());
        Assert.False(refused.Json.GetProperty("applied").GetBoolean());
        Assert.False(await IndexExistsAsync(database, "ux_chats_participants_key"));

        // The dry run prints the plan (re-point messages and memberships, delete the losers) and changes nothing.
        string[] merge = ["dedupe", "merge", .. chats, "--keep-oldest-by", "created_at"];
        var dry = await IdemCli.RunAsync([.. merge, "--json"]);
        Assert.True(dry.ExitCode == 0, dry.ToString());
        var statements = dry.Json.GetProperty("statements").EnumerateArray().Select(s => s.GetProperty("sql").GetString()!).ToList();
        Assert.Contains(statements, s => s.StartsWith("UPDATE ", StringComparison.Ordinal) && s.Contains("\"messages\" SET \"chat_id\"", StringComparison.Ordinal));
        Assert.Contains(statements, s => s.StartsWith("UPDATE ", StringComparison.Ordinal) && s.Contains("\"memberships\" SET \"chat_id\"", StringComparison.Ordinal));
        Assert.Equal(2, statements.Count(s => s.StartsWith("DELETE FROM ", StringComparison.Ordinal) && s.Contains("\"chats\"", StringComparison.Ordinal)));
        Assert.Equal(before.Chats, (await SnapshotAsync(database)).Chats);

        // --apply: the oldest by created_at (id 4) survives; every child row now points at a chat that exists.
        var applied = await IdemCli.RunAsync([.. merge, "--apply", "--json"]);
        Assert.True(applied.ExitCode == 0, applied.ToString());
        Assert.True(applied.Json.GetProperty("applied").GetBoolean());
        var after = await SnapshotAsync(database);
        Assert.Equal("3,carol,dave|4,alice,bob|5,erin,frank", after.Chats);
        Assert.Equal("1:4|2:4|3:4|4:4|5:3", after.Messages);
        Assert.Equal(5, after.Messages.Split('|').Length); // no message lost
        Assert.Equal("alice:4|bob:4|carol:3", after.Memberships);

        // A second run changes nothing.
        var again = await IdemCli.RunAsync([.. merge, "--apply", "--json"]);
        Assert.True(again.ExitCode == 0, again.ToString());
        Assert.Equal(0, again.Json.GetProperty("statements").GetArrayLength());
        Assert.Equal(after, await SnapshotAsync(database));

        var backfillAgain = await IdemCli.RunAsync(["dedupe", "backfill", .. chats, "--key-column", "participants_key", "--apply", "--json"]);
        Assert.Equal(0, backfillAgain.Json.GetProperty("statements").GetArrayLength());

        // Before the lock a duplicate can still be inserted (the naive state); after it, the index refuses one.
        await ExecuteAsync(database, "INSERT INTO chats (id, user_a, user_b, created_at, participants_key) VALUES (90, 'bob', 'alice', '2030-01-01', 'alice,bob')");
        Assert.Equal(1, (await IdemCli.RunAsync(["dedupe", "report", .. chats])).ExitCode);
        Assert.Equal(0, (await IdemCli.RunAsync([.. merge, "--apply"])).ExitCode);
        var locked = await IdemCli.RunAsync(["dedupe", "lock", .. chats, "--key-column", "participants_key", "--apply", "--json"]);
        Assert.True(locked.ExitCode == 0, locked.ToString());
        Assert.True(await IndexExistsAsync(database, "ux_chats_participants_key"));
        var lockAgain = await IdemCli.RunAsync(["dedupe", "lock", .. chats, "--key-column", "participants_key", "--apply", "--json"]);
        Assert.True(lockAgain.ExitCode == 0, lockAgain.ToString());
        Assert.Equal(0, lockAgain.Json.GetProperty("statements").GetArrayLength());
        var duplicate = await Assert.ThrowsAnyAsync<DbException>(() => ExecuteAsync(database, "INSERT INTO chats (id, user_a, user_b, created_at, participants_key) VALUES (91, 'bob', 'alice', '2030-01-01', 'alice,bob')"));
        Assert.Contains("unique", duplicate.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgresql")]
    public async Task A_tuple_key_merges_into_the_oldest_row_and_locks_on_its_columns(string database)
    {
        await ExecuteAsync(database, """
            CREATE TABLE projects (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, build_id TEXT NOT NULL, created_at TEXT NOT NULL);
            CREATE TABLE versions (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects (id), n INTEGER NOT NULL);
            INSERT INTO projects VALUES (1, 'acme', 'B1', '2024-05-02'), (2, 'acme', 'B1', '2024-05-01'), (3, 'other', 'B1', '2024-05-01'), (4, 'acme', 'B2', '2024-05-01');
            INSERT INTO versions VALUES (1, 1, 1), (2, 2, 1), (3, 3, 1), (4, 4, 1);
            """);
        string[] projects = ["--database", database, "--connection", Connection(database), "--table", "projects", "--columns", "tenant,build_id"];

        var merged = await IdemCli.RunAsync(["dedupe", "merge", .. projects, "--keep-oldest-by", "created_at", "--apply", "--json"]);
        Assert.True(merged.ExitCode == 0, merged.ToString());
        Assert.Equal("2,3,4", await ScalarAsync(database, "SELECT " + Aggregate(database, "CAST(id AS TEXT)", "id") + " FROM projects"));
        Assert.Equal("1:2|2:2|3:3|4:4", await ScalarAsync(database, "SELECT " + Aggregate(database, "CAST(id AS TEXT) || ':' || CAST(project_id AS TEXT)", "id", "|") + " FROM versions"));

        var locked = await IdemCli.RunAsync(["dedupe", "lock", .. projects, "--index-name", "ux_projects_build", "--apply"]);
        Assert.True(locked.ExitCode == 0, locked.ToString());
        await Assert.ThrowsAnyAsync<DbException>(() => ExecuteAsync(database, "INSERT INTO projects VALUES (9, 'acme', 'B1', '2030-01-01')"));
        await ExecuteAsync(database, "INSERT INTO projects VALUES (10, 'other', 'B2', '2030-01-01')"); // another tuple is fine
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgresql")]
    public async Task Bad_table_column_or_index_names_exit_2_and_change_nothing(string database)
    {
        await SeedChatsAsync(database);
        var before = await SnapshotAsync(database);
        string[] common = ["--database", database, "--connection", Connection(database)];

        var results = new[]
        {
            await IdemCli.RunAsync(["dedupe", "merge", .. common, "--table", "chatz", "--sorted-set", "user_a,user_b", "--apply"]),
            await IdemCli.RunAsync(["dedupe", "merge", .. common, "--table", "chats", "--sorted-set", "user_a,\"user_b\"; DROP TABLE messages; --", "--apply"]),
            await IdemCli.RunAsync(["dedupe", "merge", .. common, "--table", "chats; DROP TABLE messages", "--columns", "user_a", "--apply"]),
            await IdemCli.RunAsync(["dedupe", "merge", .. common, "--table", "chats", "--sorted-set", "user_a,user_b", "--keep-oldest-by", "nope", "--apply"]),
            await IdemCli.RunAsync(["dedupe", "lock", .. common, "--table", "chats", "--columns", "user_a", "--index-name", "x\"; DROP TABLE chats; --", "--apply"]),
            await IdemCli.RunAsync(["dedupe", "merge", .. common, "--table", "chats", "--apply"]),
        };

        Assert.All(results, r =>
        {
            Assert.True(r.ExitCode == 2, r.ToString());
            Assert.Contains("idem dedupe", r.Stderr.Split('\n')[0]);
        });
        Assert.Contains("no table 'chatz'", results[0].Stderr);
        Assert.Contains("has no column", results[1].Stderr);
        Assert.Equal(before, await SnapshotAsync(database));
    }

    private string Connection(string database) => database == "sqlite" ? _sqlitePath : _postgres;

    private async Task SeedChatsAsync(string database)
    {
        var timestamp = database == "sqlite" ? "TEXT" : "timestamptz";
        await ExecuteAsync(database, $"""
            CREATE TABLE chats (id INTEGER PRIMARY KEY, user_a TEXT NOT NULL, user_b TEXT NOT NULL, created_at {timestamp} NOT NULL);
            CREATE TABLE messages (id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL REFERENCES chats (id), body TEXT NOT NULL);
            CREATE TABLE memberships (member TEXT PRIMARY KEY, chat_id INTEGER REFERENCES chats (id));
            INSERT INTO chats VALUES (1, 'alice', 'bob', '2024-01-02'), (2, 'bob', 'alice', '2024-01-03'), (3, 'carol', 'dave', '2024-01-01'),
                                     (4, 'alice', 'bob', '2023-12-31'), (5, 'erin', 'frank', '2024-02-01');
            INSERT INTO messages VALUES (1, 1, 'hi'), (2, 2, 'hello'), (3, 2, 'again'), (4, 4, 'first'), (5, 3, 'other');
            INSERT INTO memberships VALUES ('alice', 1), ('bob', 2), ('carol', 3);
            """);
    }

    private sealed record Snapshot(string Chats, string Messages, string Memberships);

    private async Task<Snapshot> SnapshotAsync(string database) => new(
        await ScalarAsync(database, "SELECT " + Aggregate(database, "CAST(id AS TEXT) || ',' || user_a || ',' || user_b", "id", "|") + " FROM chats"),
        await ScalarAsync(database, "SELECT " + Aggregate(database, "CAST(id AS TEXT) || ':' || CAST(chat_id AS TEXT)", "id", "|") + " FROM messages"),
        await ScalarAsync(database, "SELECT " + Aggregate(database, "member || ':' || CAST(chat_id AS TEXT)", "member", "|") + " FROM memberships"));

    private static string Aggregate(string database, string expression, string orderBy, string separator = ",") => database == "sqlite"
        ? $"group_concat({expression}, '{separator}' ORDER BY {orderBy})"
        : $"string_agg({expression}, '{separator}' ORDER BY {orderBy})";

    private async Task<bool> IndexExistsAsync(string database, string name) =>
        await ScalarAsync(database, database == "sqlite"
            ? $"SELECT CAST(count(*) AS TEXT) FROM sqlite_master WHERE type = 'index' AND name = '{name}'"
            : $"SELECT count(*)::text FROM pg_indexes WHERE indexname = '{name}'") == "1";

    private async Task<string> ScalarAsync(string database, string sql)
    {
        await using var connection = await OpenAsync(database);
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToString(await command.ExecuteScalarAsync()) ?? "";
    }

    private async Task ExecuteAsync(string database, string sql)
    {
        await using var connection = await OpenAsync(database);
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    private async Task<DbConnection> OpenAsync(string database)
    {
        DbConnection connection = database == "sqlite"
            ? new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = _sqlitePath, ForeignKeys = true, Pooling = false }.ConnectionString)
            : new NpgsqlConnection(_postgres);
        await connection.OpenAsync();
        return connection;
    }
}
