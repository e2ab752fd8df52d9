using Idem.PostgreSql;
using Idem.Redis;
using Idem.TestUtils;
using Npgsql;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>
/// Round trips counted on the wire, by a proxy between the store and its server: a first execution costs two (claim,
/// complete), a replay one (the claim finds the completed record), and a replay from the local replay cache none.
/// </summary>
public static class RoundTrips
{
    public static async Task AssertBudgetAsync(IIdempotencyStore store, Func<long> sent)
    {
        using var meters = new TestMeterFactory();
        var direct = new IdempotencyExecutor(store, new IdempotencyMetrics(meters));
        var cached = new IdempotencyExecutor(new LocalReplayCacheStore(store), new IdempotencyMetrics(meters));
        var executions = 0;
        ValueTask<IdempotencyOutcome> Run(IdempotencyExecutor executor, string key) =>
            executor.ExecuteAsync(key, "fp", IdempotencyPolicy.Default, _ =>
            {
                Interlocked.Increment(ref executions);
                return ValueTask.FromResult(new StoredResponse(201, [new("Location", "/orders/1")], "{\"id\":1}"u8.ToArray()));
            }, CancellationToken.None);

        // Warm-up: connections opened, statements prepared, scripts loaded.
        var warm = Guid.NewGuid().ToString("N");
        await Run(direct, warm);
        await Run(direct, warm);
        await Run(cached, warm);

        // A store that announces deletions tells the cache "missed" once it listens, which empties it: let that pass first.
        for (var i = 0; i < 500 && store is RedisIdempotencyStore { ListeningForDeletions: false }; i++)
        {
            await Task.Delay(20);
        }

        var key = Guid.NewGuid().ToString("N");
        var before = sent();
        Assert.Equal(IdempotencyOutcomeKind.Executed, (await Run(direct, key)).Kind);
        Assert.Equal(2, sent() - before);

        before = sent();
        Assert.Equal(IdempotencyOutcomeKind.Replayed, (await Run(direct, key)).Kind);
        Assert.Equal(1, sent() - before);

        before = sent();
        Assert.Equal(IdempotencyOutcomeKind.Replayed, (await Run(cached, key)).Kind); // The first replay on a node reads through.
        Assert.Equal(1, sent() - before);

        before = sent();
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(IdempotencyOutcomeKind.Replayed, (await Run(cached, key)).Kind);
        }

        Assert.Equal(0, sent() - before);
        Assert.Equal(2, executions); // The warm-up key and the measured one, once each.
    }

}

[Collection(PostgreSqlServerGroup.Name)]
public sealed class PostgreSqlRoundTripTests(PostgreSqlServer server)
{
    [Fact]
    public async Task A_first_execution_costs_two_statements_a_replay_one_and_a_locally_cached_replay_none()
    {
        var target = new NpgsqlConnectionStringBuilder(server.ConnectionString);
        await using var proxy = CountingTcpProxy.Start(target.Host!, target.Port, CountingTcpProxy.Protocol.PostgreSql);
        var viaProxy = new NpgsqlConnectionStringBuilder(server.ConnectionString) { Host = "127.0.0.1", Port = proxy.Port };
        var schema = PostgreSqlServer.NewName("rt");
        await using var store = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions
        {
            ConnectionString = viaProxy.ConnectionString,
            SchemaName = schema,
            NotificationChannel = schema + "_changed",
            ListenerHealthCheckInterval = TimeSpan.FromMinutes(10), // No health check inside the counted window.
        });
        await store.MigrateAsync(CancellationToken.None);
        for (var i = 0; i < 200 && store.ListenerProcessId == 0; i++)
        {
            await Task.Delay(50); // The listener's LISTEN must not land inside the counted window either.
        }

        Assert.NotEqual(0, store.ListenerProcessId);
        await RoundTrips.AssertBudgetAsync(store, () => proxy.Count("round-trips"));
        await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    }
}

[Collection(RedisServerGroup.Name)]
public sealed class RedisRoundTripTests(RedisServer server)
{
    private static readonly string[] DataCommands = ["EVAL", "EVALSHA", "HMGET", "HGETALL", "HSET", "GET", "SET", "DEL", "SCRIPT"];

    [Fact]
    public async Task A_first_execution_costs_two_commands_a_replay_one_and_a_locally_cached_replay_none()
    {
        var endpoint = server.Endpoint.Split(':');
        await using var proxy = CountingTcpProxy.Start(endpoint[0], int.Parse(endpoint[1], System.Globalization.CultureInfo.InvariantCulture), CountingTcpProxy.Protocol.Redis);
        await using var store = new RedisIdempotencyStore(new RedisIdempotencyStoreOptions
        {
            Configuration = $"127.0.0.1:{proxy.Port}",
            KeyPrefix = RedisServer.NewPrefix("rt"),
        });
        await RoundTrips.AssertBudgetAsync(store, () => DataCommands.Sum(proxy.Count));
    }
}
