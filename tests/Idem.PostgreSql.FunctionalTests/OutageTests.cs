using System.Collections.Concurrent;
using System.Diagnostics;
using Idem.TestUtils;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace Idem.PostgreSql.FunctionalTests;

/// <summary>
/// Issue 4, item 7: PostgreSQL stopped under load. Requests fail closed (503 problem+json + Retry-After) within the store
/// timeout, no key executes twice, and once the server is back the same app (not restarted) serves 2xx within 5 s.
/// Runs against a private server: the run's shared server is never stopped.
/// </summary>
public sealed class OutageTests(ITestOutputHelper output)
{
    private const int Loops = 8;
    private const int MaxRequestsPerLoop = 1500;
    private static readonly TimeSpan StoreTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan Pace = TimeSpan.FromMilliseconds(10);

    [Fact]
    public async Task Stopped_server_fails_closed_quickly_never_duplicates_and_the_running_app_recovers()
    {
        await using var postgres = await PostgreSqlServer.StartPrivateAsync();
        var schema = PostgreSqlServer.NewName("outage");
        var executions = new ConcurrentDictionary<string, int>();
        await using var node = await AppNode.StartAsync(postgres.ConnectionString, schema, "outage", app =>
            app.MapPost("/orders", async (HttpContext context) =>
            {
                var key = context.Request.Headers["Idempotency-Key"].ToString();
                var execution = executions.AddOrUpdate(key, 1, (_, n) => n + 1);
                await Task.Delay(20, context.RequestAborted);
                return TypedResults.Created($"/orders/{Guid.NewGuid()}", new { key, execution });
            }).RequireIdempotency(),
            o => o.DefaultPolicy = o.DefaultPolicy with { StoreTimeout = StoreTimeout, Lease = Lease, WaitTimeout = TimeSpan.FromSeconds(10) },
            maxPoolSize: 20);

        var clock = Stopwatch.StartNew();
        var samples = new ConcurrentBag<Sample>();
        var completedBefore = new ConcurrentDictionary<string, byte[]>(); // answered 2xx before the outage: retried, must replay
        var refused = new ConcurrentDictionary<string, bool>();            // answered 503: retried until served, must run once
        var outage = false;
        using var stopLoad = new CancellationTokenSource(TimeSpan.FromSeconds(40));

        async Task LoadAsync(int loop)
        {
            var random = new Random(loop);
            for (var i = 0; i < MaxRequestsPerLoop && !stopLoad.IsCancellationRequested; i++)
            {
                string key;
                var kind = "new";
                if (i % 4 == 1 && refused.Keys.FirstOrDefault() is { } again && refused.TryRemove(again, out _))
                {
                    (key, kind) = (again, "retry-503");
                }
                else if (i % 4 == 3 && !completedBefore.IsEmpty)
                {
                    (key, kind) = (completedBefore.Keys.ElementAt(random.Next(completedBefore.Count)), "retry-done");
                }
                else
                {
                    key = $"k{loop}-{i}-{Guid.NewGuid():N}";
                }

                var sample = await SendAsync(node, key, kind, clock);
                samples.Add(sample);
                if (sample.Status == 503)
                {
                    refused[key] = true;
                }
                else if (sample.Status == 201 && !Volatile.Read(ref outage) && kind == "new")
                {
                    completedBefore.TryAdd(key, sample.Body);
                }

                await Task.Delay(Pace);
            }
        }

        var load = Enumerable.Range(0, Loops).Select(loop => Task.Run(() => LoadAsync(loop))).ToArray();

        await Task.Delay(TimeSpan.FromSeconds(1.5));
        Volatile.Write(ref outage, true);
        var stopping = clock.Elapsed;
        await postgres.StopAsync();
        var stopped = clock.Elapsed;
        await Task.Delay(TimeSpan.FromSeconds(3));
        var starting = clock.Elapsed;
        await postgres.StartAsync(); // returns once the server accepts connections
        var ready = clock.Elapsed;
        await Task.Delay(TimeSpan.FromSeconds(5.5));
        await stopLoad.CancelAsync();
        await Task.WhenAll(load);

        // Clients whose last answer was 503 retry with the same key until they are served.
        await Parallel.ForEachAsync(refused.Keys, new ParallelOptions { MaxDegreeOfParallelism = Loops }, async (key, _) =>
        {
            var deadline = clock.Elapsed + TimeSpan.FromSeconds(15);
            Sample retry;
            do
            {
                retry = await SendAsync(node, key, "final-retry", clock);
                samples.Add(retry);
            }
            while (retry.Status != 201 && clock.Elapsed < deadline);
            Assert.Equal(201, retry.Status);
        });

        var all = samples.OrderBy(s => s.SentAt).ToArray();
        var duringOutage = all.Where(s => s.SentAt >= stopped && s.SentAt < starting).ToArray();
        var afterReady = all.Where(s => s.SentAt >= ready && s.Kind != "final-retry").ToArray();
        var firstOk = afterReady.FirstOrDefault(s => s.Status == 201);
        var lastFailure = afterReady.LastOrDefault(s => s.Status != 201);
        var strandedClaims = await CountInFlightAsync(postgres.ConnectionString, schema);
        output.WriteLine(
            $"{all.Length} requests; stop took {(stopped - stopping).TotalSeconds:F2} s, start {(ready - starting).TotalSeconds:F2} s; " +
            $"during the outage {duringOutage.Length} requests, statuses {Histogram(duringOutage)}, slowest {Max(duringOutage):F0} ms; " +
            $"after restart: first 2xx sent {Since(firstOk?.SentAt, ready)} after ready, last non-2xx sent {Since(lastFailure?.SentAt, ready)} after ready, " +
            $"statuses {Histogram(afterReady)}; 503 keys retried: {refused.Count}; slowest request overall {Max(all):F0} ms; " +
            $"{executions.Count} keys executed; {strandedClaims} records still in flight (executed while the store went away, completion lost)");

        // Fail closed, loudly and quickly: while the server is down, every answer is 503 problem+json with Retry-After.
        Assert.NotEmpty(duringOutage);
        Assert.All(duringOutage, s =>
        {
            Assert.Equal(503, s.Status);
            Assert.True(s.Problem, "503 is not application/problem+json");
            Assert.True(s.RetryAfter, "503 without Retry-After");
        });
        Assert.All(all, s => Assert.True(s.Elapsed < StoreTimeout + TimeSpan.FromSeconds(1) || s.Status == 201,
            $"{s.Kind} request sent at {s.SentAt} answered {s.Status} after {s.Elapsed.TotalMilliseconds:F0} ms"));

        Assert.All(all, s => Assert.True(s.Elapsed < TimeSpan.FromSeconds(10) + StoreTimeout, $"{s.Kind} request hung for {s.Elapsed}"));

        // No key ran twice: not the retried 503s, not the retried completed keys, not anything in flight at the stop.
        Assert.All(executions, e => Assert.True(e.Value == 1, $"key {e.Key} executed {e.Value} times"));
        Assert.All(all.Where(s => s.Kind == "retry-done" && s.Status == 201), s =>
        {
            Assert.True(s.Replayed);
            Assert.Equal(completedBefore[s.Key], s.Body);
        });

        // The same app, never restarted, serves again within 5 s of the server accepting connections.
        Assert.NotNull(firstOk);
        Assert.True(firstOk.SentAt - ready < TimeSpan.FromSeconds(5), $"first 2xx sent {firstOk.SentAt - ready} after the server was ready");
        Assert.True(lastFailure is null || lastFailure.SentAt - ready < TimeSpan.FromSeconds(5), $"still failing {lastFailure?.SentAt - ready} after the server was ready");
        Assert.Contains(afterReady, s => s.SentAt - ready > TimeSpan.FromSeconds(5) && s.Status == 201);

        // A quiet outage: the pool holds idle connections when the server goes away and nothing uses them until it is
        // back. Npgsql notices the dead idle connections when it hands them out, so at most one request may fail.
        await Task.WhenAll(Enumerable.Range(0, 20).Select(i => SendAsync(node, $"warm-{i}-{Guid.NewGuid():N}", "warm", clock)));
        var pooled = await CountConnectionsAsync(postgres.ConnectionString, "idem-outage");
        Assert.True(pooled >= 2, $"only {pooled} pooled connections: the quiet restart proves nothing");
        await postgres.StopAsync();
        await postgres.StartAsync();
        var quiet = new List<Sample>();
        for (var i = 0; i < 20; i++)
        {
            quiet.Add(await SendAsync(node, $"quiet-{i}-{Guid.NewGuid():N}", "quiet", clock));
        }

        output.WriteLine($"after a quiet restart with {pooled} pooled connections: {Histogram(quiet)} (in order: {string.Join(" ", quiet.Select(s => s.Status))})");
        Assert.True(quiet.Count(s => s.Status != 201) <= 1, $"after a quiet restart: {Histogram(quiet)}");
        Assert.All(executions, e => Assert.True(e.Value == 1, $"key {e.Key} executed {e.Value} times"));
    }

    private static async Task<Sample> SendAsync(AppNode node, string key, string kind, Stopwatch clock)
    {
        var sentAt = clock.Elapsed;
        using var request = AppNode.Post("/orders", key);
        using var response = await node.Client.SendAsync(request);
        var body = await response.Content.ReadAsByteArrayAsync();
        return new Sample(
            key,
            kind,
            sentAt,
            clock.Elapsed - sentAt,
            (int)response.StatusCode,
            body,
            response.Content.Headers.ContentType?.MediaType == "application/problem+json",
            response.Headers.RetryAfter is not null,
            response.Headers.Contains("Idempotent-Replayed"));
    }

    private static async Task<long> CountInFlightAsync(string connectionString, string schema)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"SELECT count(*) FROM \"{schema}\".idem_records WHERE state = 'in_flight'", connection);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private static async Task<long> CountConnectionsAsync(string connectionString, string applicationName)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = applicationName });
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private static string Histogram(IEnumerable<Sample> samples) =>
        string.Join(" ", samples.GroupBy(s => s.Status).OrderBy(g => g.Key).Select(g => $"{g.Key}x{g.Count()}"));

    private static double Max(IEnumerable<Sample> samples) => samples.Select(s => s.Elapsed.TotalMilliseconds).DefaultIfEmpty().Max();

    private static string Since(TimeSpan? at, TimeSpan origin) => at is { } t ? $"{(t - origin).TotalSeconds:F2} s" : "never";

    private sealed record Sample(string Key, string Kind, TimeSpan SentAt, TimeSpan Elapsed, int Status, byte[] Body, bool Problem, bool RetryAfter, bool Replayed);
}
