using System.Text;

namespace Idem.Tests;

public sealed class ExecuteOnceTests : IDisposable
{
    private static readonly string Fp = RequestFingerprint.Compute("charge", Encoding.UTF8.GetBytes("{\"amount\":100}"));
    private readonly Harness _h = new();
    private int _runs;

    public sealed record Receipt(string Id, int Amount, string[] Lines);

    public void Dispose() => _h.Dispose();

    private Func<IdempotentExecution, ValueTask<Receipt>> Charge(string id) => _ =>
    {
        Interlocked.Increment(ref _runs);
        return ValueTask.FromResult(new Receipt(id, 100, ["a", "b"]));
    };

    [Fact]
    public async Task Two_workers_with_one_key_run_once_and_get_equal_results()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        var first = _h.Executor.ExecuteOnceAsync("charge", "msg-1", Fp, async _ =>
        {
            Interlocked.Increment(ref _runs);
            started.SetResult();
            await release.Task;
            return new Receipt("r-1", 100, ["a", "b"]);
        }).AsTask();
        await started.Task.WaitAsync(Tests.Guard);

        var second = _h.Executor.ExecuteOnceAsync("charge", "msg-1", Fp, Charge("r-2")).AsTask();
        await _h.Time.WaitForTimerAsync(Tests.FirstPoll);
        release.SetResult();

        var a = await first.WaitAsync(Tests.Guard);
        var b = await second.WaitAsync(Tests.Guard);
        Assert.Equal(1, _runs);
        Assert.Equal("r-1", a.Id);
        Assert.Equal(a.Id, b.Id);
        Assert.Equal(a.Amount, b.Amount);
        Assert.Equal(a.Lines, b.Lines);

        var third = await _h.Executor.ExecuteOnceAsync("charge", "msg-1", Fp, Charge("r-3")).Guarded();
        Assert.Equal("r-1", third.Id);
        Assert.Equal(1, _runs);
    }

    [Fact]
    public async Task Different_scopes_with_one_key_run_twice()
    {
        var a = await _h.Executor.ExecuteOnceAsync("charge", "msg-1", Fp, Charge("r-1")).Guarded();
        var b = await _h.Executor.ExecuteOnceAsync("refund", "msg-1", Fp, Charge("r-2")).Guarded();
        Assert.Equal(2, _runs);
        Assert.Equal("r-1", a.Id);
        Assert.Equal("r-2", b.Id);
    }

    [Fact]
    public async Task Another_fingerprint_throws_with_the_outcome()
    {
        await _h.Executor.ExecuteOnceAsync("charge", "msg-1", Fp, Charge("r-1")).Guarded();

        var ex = await Assert.ThrowsAsync<IdempotencyException>(async () =>
            await _h.Executor.ExecuteOnceAsync("charge", "msg-1", RequestFingerprint.Compute("charge", "{}"u8), Charge("r-2")).Guarded());
        Assert.Equal(IdempotencyOutcomeKind.FingerprintMismatch, ex.Outcome.Kind);
        Assert.False(string.IsNullOrEmpty(ex.Message));
        Assert.Equal(1, _runs);
    }

    [Fact]
    public async Task Conflict_throws_with_the_outcome()
    {
        var storeKey = IdempotencyScope.ComputeStoreKey(string.Empty, "charge", "msg-1");
        await _h.Memory.TryClaimAsync(new ClaimRequest(storeKey, Fp, Guid.NewGuid(), TimeSpan.FromHours(1), TimeSpan.FromHours(2)), default);

        var ex = await Assert.ThrowsAsync<IdempotencyException>(async () =>
            await _h.Executor.ExecuteOnceAsync("charge", "msg-1", Fp, Charge("r-1"), IdempotencyPolicy.Default with { ConflictBehavior = ConflictBehavior.Reject }).Guarded());
        Assert.Equal(IdempotencyOutcomeKind.Conflict, ex.Outcome.Kind);
        Assert.NotNull(ex.Outcome.RetryAfter);
        Assert.Equal(0, _runs);
    }

    [Fact]
    public async Task Store_outage_throws_with_the_outcome()
    {
        _h.Counting.FailWith = new InvalidOperationException("down");
        var ex = await Assert.ThrowsAsync<IdempotencyException>(async () =>
            await _h.Executor.ExecuteOnceAsync("charge", "msg-1", Fp, Charge("r-1")).Guarded());
        Assert.Equal(IdempotencyOutcomeKind.StoreUnavailable, ex.Outcome.Kind);
        Assert.Equal(0, _runs);
    }

    [Fact]
    public async Task Oversized_result_is_returned_once_and_replays_throw()
    {
        var policy = IdempotencyPolicy.Default with { MaxStoredBodyBytes = 8 };
        var first = await _h.Executor.ExecuteOnceAsync("charge", "msg-1", Fp, Charge("a-long-receipt-id"), policy).Guarded();
        Assert.Equal("a-long-receipt-id", first.Id);

        var ex = await Assert.ThrowsAsync<IdempotencyException>(async () =>
            await _h.Executor.ExecuteOnceAsync("charge", "msg-1", Fp, Charge("r-2"), policy).Guarded());
        Assert.Equal(IdempotencyOutcomeKind.Replayed, ex.Outcome.Kind);
        Assert.True(ex.Outcome.Response!.BodyOmitted);
        Assert.Equal(1, _runs);
    }
}
