using System.Data.Common;
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

    protected override Task<CreateOrGetResult<long>> CreateOrGetChatAsync(DbConnection connection, DbTransaction? transaction, string key, string? title = null) =>
        ((SqliteConnection)connection).CreateOrGetAsync(Chats, [key, title], r => r.GetInt64(0), (SqliteTransaction?)transaction);

    protected override Task<(long Id, string Slug)> InsertCommunityAsync(DbConnection connection, DbTransaction? transaction, string name, SlugOptions options) =>
        ((SqliteConnection)connection).InsertWithUniqueSlugAsync(
            new UniqueSlugDefinition("communities", "slug", columns: ["name"], returning: ["id", "slug"]) { Options = options, Logger = SlugLogger },
            name, [name], r => (r.GetInt64(0), r.GetString(1)), (SqliteTransaction?)transaction);

    protected override bool IsUniqueViolation(Exception exception) => exception.IsUniqueViolation();

    protected override void AssertCheckViolation(Exception exception)
    {
        var sqlite = Assert.IsType<SqliteException>(exception);
        Assert.Equal(19, sqlite.SqliteErrorCode);
        Assert.Equal(275, sqlite.SqliteExtendedErrorCode); // SQLITE_CONSTRAINT_CHECK
    }
}
