using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;

namespace Idem.Tests;

/// <summary>
/// The operation ran, then the store could not take its completion (unreachable, restarting, timed out). Without a
/// retry the key stays claimed until its lease runs out and the client's retry runs the operation a second time; with
/// it (in the background: the caller is answered at once), a transient outage ends in a stored response that the
/// retry replays. Real time: the retry's backoff and the lease (three seconds, long enough that a loaded machine does
/// not expire it between two steps) run on the system clock, and the tests count executions, never durations.
/// </summary>
public sealed class CompletionRetryTests : IDisposable
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(3);
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();
    private readonly HookStore _store = new(new InMemoryIdempotencyStore(TimeProvider.System));
    private readonly IdempotencyPolicy _policy = IdempotencyPolicy.Default with { Lease = Lease, WaitTimeout = TimeSpan.FromSeconds(20) };
    private readonly string _key = IdempotencyScope.ComputeStoreKey("user-1", "POST /orders", "key-1");
    private int _completions;
    private int _executions;

    public CompletionRetryTests() =>
        Executor = new IdempotencyExecutor(_store, new IdempotencyMetrics(_services.GetRequiredService<IMeterFactory>()), TimeProvider.System);

    private IdempotencyExecutor Executor { get; }

    public void Dispose() => _services.Dispose();

    /// <summary>The store refuses the first <paramref name="count"/> completions as an unreachable store would.</summary>
    private void FailCompletions(int count) => _store.BeforeComplete = (_, _) =>
    {
        if (Interlocked.Increment(ref _completions) <= count)
        {
            throw new IOException("The idempotency store is unreachable (test).");
        }
    };

    private Task<IdempotencyOutcome> Run() => Executor.ExecuteAsync(_key, "fp", _policy, _ =>
    {
        var n = Interlocked.Increment(ref _executions);
        return ValueTask.FromResult(Tests.Response(201, $"execution {n}"));
    }, CancellationToken.None).AsTask().WaitAsync(Tests.Guard);

    [Theory]
    // A transient outage: the third completion is taken, the retry after the lease is a replay of the first execution.
    [InlineData(2, 1)]
    // The naive variant, the failure the retry prevents: a store that never takes the completion within the retry's
    // bound (one lease) leaves the key claimed; once the lease runs out the client's retry runs the operation again.
    [InlineData(int.MaxValue, 2)]
    public async Task A_completion_the_store_could_not_take_is_retried_so_a_later_retry_is_a_replay(int failedCompletions, int expectedExecutions)
    {
        FailCompletions(failedCompletions);

        var first = await Run();
        await Task.Delay(Lease + TimeSpan.FromMilliseconds(300)); // the client retries after the lease has run out
        var retry = await Run();

        Assert.Equal(IdempotencyOutcomeKind.Executed, first.Kind);
        Assert.Equal("execution 1", first.Text());
        Assert.Equal(expectedExecutions, _executions);
        Assert.False(first.Stored); // answered at once; the completion is retried in the background
        if (expectedExecutions == 1)
        {
            Assert.Equal(IdempotencyOutcomeKind.Replayed, retry.Kind);
            Assert.Equal("execution 1", retry.Text());
            Assert.Equal(3, _completions);
        }
        else
        {
            Assert.Equal(IdempotencyOutcomeKind.Executed, retry.Kind);
            Assert.True(_completions <= 2 * IdempotencyExecutor.MaxCompletionAttempts, $"{_completions} completions: the retries must be bounded");
        }
    }

    [Fact]
    public async Task A_duplicate_that_arrives_while_the_completion_is_retried_waits_and_gets_the_replay()
    {
        var failing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _store.BeforeComplete = (_, _) =>
        {
            if (Interlocked.Increment(ref _completions) <= 3)
            {
                failing.TrySetResult();
                throw new IOException("The idempotency store is unreachable (test).");
            }
        };

        var first = Run();
        await failing.Task.WaitAsync(Tests.Guard);
        var duplicate = await Run(); // the key is in flight under the first owner: the duplicate waits for it

        Assert.Equal(IdempotencyOutcomeKind.Replayed, duplicate.Kind);
        Assert.True(duplicate.Waited);
        Assert.Equal("execution 1", duplicate.Text());
        Assert.Equal("execution 1", (await first).Text());
        Assert.Equal(1, _executions);
        Assert.Equal(4, _completions);
    }
}
