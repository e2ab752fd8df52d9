using System.Net;
using Idem.TestUtils;

namespace Idem.Gateway.FunctionalTests;

/// <summary>Gateway nodes on Redis (<c>Idem:Store=Redis</c>) and on PostgreSQL with a Redis response cache (<c>Tiered</c>).</summary>
public sealed class RedisGatewayTests(RedisServer redis, PostgreSqlServer postgres) : IClassFixture<RedisServer>, IClassFixture<PostgreSqlServer>
{
    [Fact]
    public async Task Two_gateways_on_one_Redis_execute_a_same_key_storm_once()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        string[] args = ["--Idem:Store", "Redis", "--Idem:Redis:Configuration", redis.Endpoint, "--Idem:Redis:KeyPrefix", RedisServer.NewPrefix("gw")];
        await using var one = await GatewayUnderTest.StartAsync(upstream.Address, args);
        await using var two = await GatewayUnderTest.StartAsync(upstream.Address, args);
        var key = Http.NewKey();

        var responses = await Task.WhenAll(Enumerable.Range(0, 200).Select(i =>
            (i % 2 == 0 ? one : two).Client.SendAsync(Http.Post("/orders?delayMs=300", key))));
        var bodies = await Task.WhenAll(responses.Select(r => r.Content.ReadAsStringAsync()));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        Assert.Single(bodies.Distinct());
        Assert.Equal(1, upstream.Started("orders"));
        Assert.Single(responses, r => !Http.Replayed(r));

        // Replayed by the node that did not execute it, after the fact, byte for byte.
        var original = responses.Single(r => !Http.Replayed(r));
        var replay = await two.Client.SendAsync(Http.Post("/orders?delayMs=300", key));
        await Http.AssertReplayOfAsync(original, replay);
        Assert.Equal(1, upstream.Started("orders"));
    }

    [Fact]
    public async Task Two_tiered_gateways_execute_a_same_key_storm_once()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        var connectionString = await postgres.CreateDatabaseAsync();
        string[] args =
        [
            "--Idem:Store", "Tiered", "--Idem:PostgreSql:ConnectionString", connectionString,
            "--Idem:Redis:Configuration", redis.Endpoint, "--Idem:Redis:KeyPrefix", RedisServer.NewPrefix("gwt"),
        ];
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
    public async Task A_tiered_gateway_whose_Redis_is_dead_still_executes_a_same_key_storm_once()
    {
        // A cache outage must never read as "new request", end to end: Redis goes away; the gateway gets slower, never duplicates and never fails a request.
        await using var upstream = await CountingUpstream.StartAsync();
        await using var privateRedis = await RedisServer.StartPrivateAsync();
        var connectionString = await postgres.CreateDatabaseAsync();
        string[] args =
        [
            "--Idem:Store", "Tiered", "--Idem:PostgreSql:ConnectionString", connectionString,
            "--Idem:Redis:Configuration", privateRedis.Endpoint, "--Idem:Redis:OperationTimeout", "00:00:01",
        ];
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address, args);
        var before = Http.NewKey();
        var original = await gateway.Client.SendAsync(Http.Post("/orders", before));
        Assert.Equal(HttpStatusCode.Created, original.StatusCode);

        await privateRedis.KillAsync();

        var key = Http.NewKey();
        var responses = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => gateway.Client.SendAsync(Http.Post("/orders?delayMs=300", key))));
        var bodies = await Task.WhenAll(responses.Select(r => r.Content.ReadAsStringAsync()));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        Assert.Single(bodies.Distinct());
        Assert.Single(responses, r => !Http.Replayed(r));
        Assert.Equal(2, upstream.Started("orders"));

        // Completed before the outage: replayed from PostgreSQL now.
        await Http.AssertReplayOfAsync(original, await gateway.Client.SendAsync(Http.Post("/orders", before)));
        Assert.Equal(2, upstream.Started("orders"));
    }
}
