using System.Globalization;
using System.Net;
using Idem.TestUtils;

namespace Idem.Gateway.FunctionalTests;

/// <summary>
/// Three gateway processes (real OS processes, <c>dotnet Idem.Gateway.dll</c>) on one store, behind a client that
/// spreads every storm's requests round-robin over them: each storm's key executes once at the upstream and every
/// answer is byte-identical. CI runs <see cref="DefaultStorms"/> storms per store; <c>IDEM_THREE_NODE_STORMS=50</c>
/// (benchmarks/three-nodes.sh) runs the full figure.
/// </summary>
public sealed class ThreeNodeTests(PostgreSqlServer postgres, RedisCluster cluster) : IClassFixture<PostgreSqlServer>, IClassFixture<RedisCluster>
{
    private const int DefaultStorms = 3;
    private const int RequestsPerStorm = 200;

    public enum Store
    {
        PostgreSql,
        RedisCluster,
        TieredOnRedisCluster,
    }

    [Theory]
    [InlineData(Store.PostgreSql)]
    [InlineData(Store.RedisCluster)]
    [InlineData(Store.TieredOnRedisCluster)]
    public async Task Three_gateway_processes_execute_every_storm_once_with_identical_answers(Store store)
    {
        var storms = int.TryParse(Environment.GetEnvironmentVariable("IDEM_THREE_NODE_STORMS"), CultureInfo.InvariantCulture, out var n) && n > 0 ? n : DefaultStorms;
        await using var upstream = await CountingUpstream.StartAsync();
        var args = new List<string>
        {
            "--upstream", upstream.Address.ToString().TrimEnd('/'), "--Idem:Default:WaitTimeout", "00:01:00",
        };
        switch (store)
        {
            case Store.PostgreSql:
                args.AddRange(["--Idem:Store", "PostgreSql", "--Idem:PostgreSql:ConnectionString", await postgres.CreateDatabaseAsync()]);
                break;
            case Store.RedisCluster:
                args.AddRange(["--Idem:Store", "Redis", "--Idem:Redis:Configuration", cluster.Configuration, "--Idem:Redis:KeyPrefix", RedisServer.NewPrefix("three")]);
                break;
            case Store.TieredOnRedisCluster:
                args.AddRange(
                [
                    "--Idem:Store", "Tiered", "--Idem:PostgreSql:ConnectionString", await postgres.CreateDatabaseAsync(),
                    "--Idem:Redis:Configuration", cluster.Configuration, "--Idem:Redis:KeyPrefix", RedisServer.NewPrefix("three-cache"),
                ]);
                break;
        }

        var nodes = new List<GatewayProcess>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                nodes.Add(await GatewayProcess.StartAsync(GatewayProcess.GatewayDll, args, TimeSpan.FromSeconds(60)));
            }

            using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = 1000 };
            using var client = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(90) };
            for (var storm = 0; storm < storms; storm++)
            {
                var key = Http.NewKey();
                var path = $"/orders/storm{storm}?delayMs=200";
                var responses = await Task.WhenAll(Enumerable.Range(0, RequestsPerStorm).Select(i =>
                {
                    var request = Http.Post(path, key);
                    request.RequestUri = new Uri(nodes[i % nodes.Count].Address, path);
                    return client.SendAsync(request);
                }));
                var bodies = await Task.WhenAll(responses.Select(r => r.Content.ReadAsByteArrayAsync()));

                Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
                Assert.Equal(1, upstream.Started("storm" + storm));
                Assert.Single(responses, r => !Http.Replayed(r));
                Assert.All(bodies, b => Assert.Equal(bodies[0], b));
                foreach (var response in responses)
                {
                    response.Dispose();
                }
            }
        }
        finally
        {
            foreach (var node in nodes)
            {
                await node.DisposeAsync();
            }
        }
    }
}
