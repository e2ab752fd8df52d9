using System.Diagnostics.Metrics;
using System.Text;
using Microsoft.Extensions.DependencyInjection;

namespace Idem.Tests;

public sealed class ConcurrencyTests
{
    [Fact]
    public async Task Many_concurrent_callers_of_one_key_run_the_work_once_and_see_the_same_bytes()
    {
        const int callers = 256;
        var store = new InMemoryIdempotencyStore(TimeProvider.System);
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var metrics = new IdempotencyMetrics(services.GetRequiredService<IMeterFactory>());
        var executor = new IdempotencyExecutor(store, metrics, TimeProvider.System);
        var key = IdempotencyScope.ComputeStoreKey("user", "POST /orders", "hot-key");
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var runs = 0;

        async ValueTask<StoredResponse> Work(IdempotentExecution execution)
        {
            var run = Interlocked.Increment(ref runs);
            await Task.Yield();
            return new StoredResponse(201, null, Encoding.UTF8.GetBytes($"order-{run}-{execution.OwnerToken}"));
        }

        var tasks = Enumerable.Range(0, callers)
            .Select(_ => Task.Run(async () =>
            {
                await gate.Task;
                return await executor.ExecuteAsync(key, "fp", IdempotencyPolicy.Default, Work, CancellationToken.None);
            }))
            .ToArray();
        gate.SetResult();
        var outcomes = await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(1, runs);
        Assert.Single(outcomes, o => o.Kind == IdempotencyOutcomeKind.Executed);
        Assert.All(outcomes, o => Assert.Contains(o.Kind, new[] { IdempotencyOutcomeKind.Executed, IdempotencyOutcomeKind.Replayed }));
        var body = outcomes[0].Response!.Body.ToArray();
        Assert.All(outcomes, o => Assert.Equal(body, o.Response!.Body.ToArray()));
        Assert.StartsWith("order-1-", Encoding.UTF8.GetString(body), StringComparison.Ordinal);
    }
}
