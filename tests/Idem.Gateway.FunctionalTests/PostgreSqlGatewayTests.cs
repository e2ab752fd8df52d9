using System.Net;
using Idem.TestUtils;

namespace Idem.Gateway.FunctionalTests;

/// <summary>Two gateway nodes on one PostgreSQL database: in-process hosts, and real OS processes that share nothing but the database.</summary>
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

    [Fact]
    public async Task Two_gateway_processes_on_one_PostgreSQL_execute_a_same_key_storm_once_and_replay_each_others_responses()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        var connectionString = await _postgres.CreateDatabaseAsync();
        string[] args = ["--upstream", upstream.Address.ToString().TrimEnd('/'), "--Idem:Store", "PostgreSql", "--Idem:PostgreSql:ConnectionString", connectionString];
        await using var one = await GatewayProcess.StartAsync(GatewayProcess.GatewayDll, args);
        await using var two = await GatewayProcess.StartAsync(GatewayProcess.GatewayDll, args);
        var nodes = new[] { one, two };

        // Phase 1: a storm of one key split across both processes, while the one execution is still running (300 ms).
        var key = Http.NewKey();
        var storm = await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
        {
            var node = i % 2;
            var response = await nodes[node].Client.SendAsync(Http.Post("/orders?delayMs=300", key));
            return (Node: node, Response: response, Body: await response.Content.ReadAsStringAsync());
        }));

        Assert.All(storm, r => Assert.Equal(HttpStatusCode.Created, r.Response.StatusCode));
        Assert.Single(storm.Select(r => r.Body).Distinct());
        Assert.Equal(1, upstream.Started("orders"));
        Assert.Single(storm, r => !Http.Replayed(r.Response)); // the owner's own response; every other one waited or replayed
        // Each process served duplicates it did not execute: the process that lost the claim learned the outcome
        // only through PostgreSQL, so this is cross-process coordination, not one process doing all the work.
        Assert.Contains(storm, r => r.Node == 0 && Http.Replayed(r.Response));
        Assert.Contains(storm, r => r.Node == 1 && Http.Replayed(r.Response));

        // Phase 2: a completed response stored by one process is replayed by the other, byte for byte.
        var fresh = Http.NewKey();
        var original = await one.Client.SendAsync(Http.Post("/invoices", fresh));
        var replay = await two.Client.SendAsync(Http.Post("/invoices", fresh));

        await Http.AssertReplayOfAsync(original, replay);
        Assert.Equal(original.Headers.Location, replay.Headers.Location);
        Assert.Equal(1, upstream.Started("invoices"));
        Assert.Equal(HttpStatusCode.OK, (await one.Client.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await two.Client.GetAsync("/healthz")).StatusCode);
    }
}
