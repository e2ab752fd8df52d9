// Compiled in once the PostgreSQL store and tests/Idem.TestUtils/PostgreSqlServer.cs are on this branch (see the csproj).
using System.Net;
using Idem.TestUtils;

namespace Idem.Gateway.FunctionalTests;

/// <summary>Two gateway nodes, each with its own PostgreSQL store instance and pool, on one database.</summary>
public sealed class PostgreSqlGatewayTests : IClassFixture<PostgreSqlServer>
{
    private readonly PostgreSqlServer _postgres;

    public PostgreSqlGatewayTests(PostgreSqlServer postgres) => _postgres = postgres;

    [Fact]
    public async Task Two_gateways_on_one_PostgreSQL_execute_a_same_key_storm_once()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        var connectionString = await _postgres.CreateDatabaseAsync();
        string[] args = ["--Idem:Store", "PostgreSql", "--Idem:PostgreSql:ConnectionString", connectionString];
        await using var one = await GatewayUnderTest.StartAsync(upstream.Address, args);
        await using var two = await GatewayUnderTest.StartAsync(upstream.Address, args);
        var key = Http.NewKey();

        var responses = await Task.WhenAll(Enumerable.Range(0, 200).Select(i =>
            (i % 2 == 0 ? one : two).Client.SendAsync(Http.Post("/orders?delayMs=300", key))));
        var bodies = await Task.WhenAll(responses.Select(r => r.Content.ReadAsStringAsync()));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        Assert.Single(bodies.Distinct());
        Assert.Equal(1, upstream.Started("orders"));
        Assert.Equal(HttpStatusCode.OK, (await one.Client.GetAsync("/healthz")).StatusCode);
    }
}
