using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Idem.TestUtils;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit;
using Xunit.Abstractions;

namespace Idem.PostgreSql.FunctionalTests;

/// <summary>
/// Issue 4, item 5: several nodes (separate apps, stores and connection pools) share one table. Storms of concurrent
/// same-key requests spread round-robin over the nodes execute once per key, and every 2xx answer is the same bytes.
/// </summary>
[Collection(SharedPostgreSql.Name)]
public sealed class MultiNodeTests(PostgreSqlServer server, ITestOutputHelper output)
{
    private const int Storms = 50;
    private const int RequestsPerStorm = 200;
    private static readonly TimeSpan HandlerDelay = TimeSpan.FromMilliseconds(75);

    [Theory]
    [InlineData(2, ConflictBehavior.Wait)]
    [InlineData(3, ConflictBehavior.Wait)]
    [InlineData(2, ConflictBehavior.Reject)]
    [InlineData(3, ConflictBehavior.Reject)]
    public async Task Storms_spread_over_nodes_execute_once_per_key_and_every_success_is_the_same_bytes(int nodeCount, ConflictBehavior behavior)
    {
        var schema = PostgreSqlServer.NewName("multi");
        var executions = new ConcurrentDictionary<string, int>();
        var nodes = new List<AppNode>();
        try
        {
            for (var i = 0; i < nodeCount; i++)
            {
                var name = "node" + i;
                nodes.Add(await AppNode.StartAsync(server.ConnectionString, schema, name, app =>
                    app.MapPost("/orders", async (HttpContext context) =>
                    {
                        var key = context.Request.Headers["Idempotency-Key"].ToString();
                        var execution = executions.AddOrUpdate(key, 1, (_, n) => n + 1);
                        await Task.Delay(HandlerDelay, context.RequestAborted);
                        return TypedResults.Created($"/orders/{Guid.NewGuid()}", new { node = name, execution, at = TimeProvider.System.GetUtcNow() });
                    }).RequireIdempotency(o => o.ConflictBehavior = behavior)));
            }

            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(120));
            var clock = Stopwatch.StartNew();
            var executedOn = new ConcurrentDictionary<string, int>();
            var crossNodeReplays = 0;
            var conflicts = 0;
            for (var storm = 0; storm < Storms; storm++)
            {
                var key = $"storm-{storm}-{Guid.NewGuid():N}";
                var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var requests = Enumerable.Range(0, RequestsPerStorm)
                    .Select(i => SendAsync(nodes[i % nodeCount], key, gate.Task, deadline.Token))
                    .ToArray();
                gate.SetResult();
                var results = await Task.WhenAll(requests);

                Assert.Equal(1, executions.GetValueOrDefault(key));
                var successes = results.Where(r => r.Status == 201).ToArray();
                var owner = successes.Single(r => !r.Replayed); // exactly one answer is the execution itself
                Assert.All(successes, r => Assert.Equal(owner.Body, r.Body));
                Assert.All(successes, r => Assert.Equal(owner.Location, r.Location));
                if (behavior == ConflictBehavior.Wait)
                {
                    Assert.Equal(RequestsPerStorm, successes.Length);
                }
                else
                {
                    // Reject: the rest are 409 + Retry-After, and none of them ran the handler.
                    Assert.All(results.Where(r => r.Status != 201), r =>
                    {
                        Assert.Equal(409, r.Status);
                        Assert.True(r.RetryAfter, "409 without Retry-After");
                    });
                    conflicts += results.Length - successes.Length;
                }

                // Afterwards every node, whichever executed, replays the same bytes.
                var afterwards = await Task.WhenAll(nodes.Select(n => SendAsync(n, key, Task.CompletedTask, deadline.Token)));
                Assert.All(afterwards, r =>
                {
                    Assert.Equal(201, r.Status);
                    Assert.True(r.Replayed);
                    Assert.Equal(owner.Body, r.Body);
                    Assert.Equal(owner.Location, r.Location);
                });
                Assert.Equal(1, executions.GetValueOrDefault(key));

                var executingNode = JsonDocument.Parse(owner.Body).RootElement.GetProperty("node").GetString()!;
                executedOn.AddOrUpdate(executingNode, 1, (_, n) => n + 1);
                crossNodeReplays += successes.Count(r => r.Replayed && r.Node != executingNode);
            }

            output.WriteLine($"{nodeCount} nodes, {behavior}: {Storms} storms x {RequestsPerStorm} in {clock.Elapsed.TotalSeconds:F1} s; " +
                $"executed on {string.Join(", ", executedOn.OrderBy(p => p.Key).Select(p => $"{p.Key}={p.Value}"))}; " +
                $"{crossNodeReplays} storm requests replayed by another node than the executing one; {conflicts} conflicts (409)");
            Assert.Equal(Storms, executions.Count);
            Assert.All(executions.Values, n => Assert.Equal(1, n));
            Assert.True(executedOn.Count >= 2, "every storm executed on the same node: the nodes did not really compete");
        }
        finally
        {
            foreach (var node in nodes)
            {
                await node.DisposeAsync();
            }

            await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        }
    }

    private static async Task<Result> SendAsync(AppNode node, string key, Task gate, CancellationToken cancellationToken)
    {
        await gate;
        using var request = AppNode.Post("/orders", key);
        using var response = await node.Client.SendAsync(request, cancellationToken);
        return new Result(
            node.Name,
            (int)response.StatusCode,
            await response.Content.ReadAsByteArrayAsync(cancellationToken),
            response.Headers.Location?.ToString(),
            response.Headers.Contains("Idempotent-Replayed"),
            response.Headers.RetryAfter is not null);
    }

    private sealed record Result(string Node, int Status, byte[] Body, string? Location, bool Replayed, bool RetryAfter);
}
