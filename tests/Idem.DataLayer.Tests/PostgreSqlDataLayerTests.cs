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
}
