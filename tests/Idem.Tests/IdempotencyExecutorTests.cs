using Idem.TestUtils;

namespace Idem.Tests;

public sealed class IdempotencyExecutorTests : IDisposable
{
    private const string Fp = "fingerprint-1";
    private readonly Harness _h = new();
    private readonly string _key = IdempotencyScope.ComputeStoreKey("user-1", "POST /orders", "key-1");
    private int _runs;

    public void Dispose() => _h.Dispose();

    private CountingStore Counting => _h.Counting;

    private IdempotencyExecutor Executor => _h.Executor;

    private Func<IdempotentExecution, ValueTask<StoredResponse>> Work(int status = 201, string body = "created") => _ =>
    {
        Interlocked.Increment(ref _runs);
        return ValueTask.FromResult(Tests.Response(status, body));
    };

    private Task<IdempotencyOutcome> Run(IdempotencyPolicy? policy = null, Func<IdempotentExecution, ValueTask<StoredResponse>>? work = null, string fingerprint = Fp, CancellationToken cancellationToken = default) =>
        Executor.ExecuteAsync(_key, fingerprint, policy ?? IdempotencyPolicy.Default, work ?? Work(), cancellationToken).AsTask().WaitAsync(Tests.Guard, CancellationToken.None);

    /// <summary>A work that reports its start and runs until released.</summary>
    private sealed class BlockedWork
    {
        public TaskCompletionSource<IdempotentExecution> Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<StoredResponse> Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Runs;

        public async ValueTask<StoredResponse> RunAsync(IdempotentExecution execution)
        {
            Interlocked.Increment(ref Runs);
            Started.TrySetResult(execution);
            return await Release.Task;
        }
    }

    /// <summary>A work that reports its start and returns (or throws) once its token is cancelled.</summary>
    private sealed class CancellableWork
    {
        public TaskCompletionSource<IdempotentExecution> Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Cancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask<StoredResponse> RunAsync(IdempotentExecution execution)
        {
            using var registration = execution.CancellationToken.Register(() => Cancelled.TrySetResult());
            Started.TrySetResult(execution);
            await Cancelled.Task;
            execution.CancellationToken.ThrowIfCancellationRequested();
            return Tests.Response(200, "unreachable");
        }
    }

    [Fact]
    public async Task First_execution_costs_one_claim_and_one_complete()
    {
        var outcome = await Run();

        Assert.Equal(IdempotencyOutcomeKind.Executed, outcome.Kind);
        Assert.True(outcome.Stored);
        Assert.False(outcome.TookOver);
        Assert.Equal(201, outcome.Response!.StatusCode);
        Assert.Equal("created", outcome.Text());
        Assert.Equal(1, _runs);
        Assert.Equal(1, Counting.Claims);
        Assert.Equal(1, Counting.Completes);
        Assert.Equal(2, Counting.Total);
        Assert.Equal(0, Counting.Waits);
    }

    [Fact]
    public async Task Replay_costs_one_claim_and_is_byte_identical()
    {
        var body = new byte[] { 0, 1, 2, 0xFF, 0xFE, 10, 13, 0x80 };
        var first = await Run(work: _ => ValueTask.FromResult(new StoredResponse(201, [new("Location", "/orders/7"), new("ETag", "\"v1\"")], body)));
        Counting.Reset();

        var replay = await Run(work: Work(200, "must not run"));

        Assert.Equal(IdempotencyOutcomeKind.Replayed, replay.Kind);
        Assert.False(replay.Waited);
        Assert.Equal(0, _runs);
        Assert.Equal(1, Counting.Claims);
        Assert.Equal(1, Counting.Total);
        Assert.Equal(201, replay.Response!.StatusCode);
        Assert.Equal(body, replay.Response.Body.ToArray());
        Assert.Equal(first.Response!.Headers, replay.Response.Headers);
        Assert.False(replay.Response.BodyOmitted);
    }

    [Fact]
    public async Task Another_fingerprint_is_a_mismatch_and_does_not_run()
    {
        await Run();
        var outcome = await Run(fingerprint: "fingerprint-2");

        Assert.Equal(IdempotencyOutcomeKind.FingerprintMismatch, outcome.Kind);
        Assert.Null(outcome.Response);
        Assert.Equal(1, _runs);
    }

    [Fact]
    public async Task Another_fingerprint_while_in_flight_is_a_mismatch_and_does_not_run()
    {
        var blocked = new BlockedWork();
        var first = Run(work: blocked.RunAsync);
        await blocked.Started.Task.WaitAsync(Tests.Guard);

        var outcome = await Run(fingerprint: "fingerprint-2");
        Assert.Equal(IdempotencyOutcomeKind.FingerprintMismatch, outcome.Kind);
        Assert.Equal(0, _runs);

        blocked.Release.SetResult(Tests.Response(200, "ok"));
        Assert.Equal(IdempotencyOutcomeKind.Executed, (await first).Kind);
    }

    [Fact]
    public async Task Work_that_throws_releases_the_key_and_the_exception_propagates()
    {
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => Run(work: _ =>
        {
            Interlocked.Increment(ref _runs);
            throw new InvalidOperationException("boom");
        }));
        Assert.Equal("boom", ex.Message);
        Assert.Equal(1, Counting.Releases);
        Assert.Equal(0, Counting.Completes);

        var retry = await Run();
        Assert.Equal(IdempotencyOutcomeKind.Executed, retry.Kind);
        Assert.True(retry.Stored);
        Assert.Equal(2, _runs);
    }

    [Fact]
    public async Task Work_that_fails_asynchronously_releases_the_key()
    {
        await Assert.ThrowsAsync<TimeoutException>(() => Run(work: async _ =>
        {
            Interlocked.Increment(ref _runs);
            await Task.Yield();
            throw new TimeoutException();
        }));

        Assert.Equal(IdempotencyOutcomeKind.Executed, (await Run()).Kind);
        Assert.Equal(2, _runs);
    }

    [Theory]
    [InlineData(500)]
    [InlineData(502)]
    [InlineData(503)]
    [InlineData(408)]
    [InlineData(429)]
    public async Task Retryable_statuses_release_and_are_not_stored(int status)
    {
        var outcome = await Run(work: Work(status, "try again"));

        Assert.Equal(IdempotencyOutcomeKind.Executed, outcome.Kind);
        Assert.False(outcome.Stored);
        Assert.Equal(status, outcome.Response!.StatusCode);
        Assert.Equal(1, Counting.Releases);
        Assert.Equal(0, Counting.Completes);

        var retry = await Run(work: Work(201, "created"));
        Assert.Equal(IdempotencyOutcomeKind.Executed, retry.Kind);
        Assert.Equal(2, _runs);
    }

    [Theory]
    [InlineData(200)]
    [InlineData(201)]
    [InlineData(204)]
    [InlineData(400)]
    [InlineData(404)]
    [InlineData(409)]
    [InlineData(422)]
    public async Task Final_statuses_are_stored_and_replayed(int status)
    {
        var outcome = await Run(work: Work(status, "final"));
        Assert.True(outcome.Stored);

        var replay = await Run();
        Assert.Equal(IdempotencyOutcomeKind.Replayed, replay.Kind);
        Assert.Equal(status, replay.Response!.StatusCode);
        Assert.Equal("final", replay.Text());
        Assert.Equal(1, _runs);
    }

    [Fact]
    public async Task Custom_should_store_decides()
    {
        var policy = IdempotencyPolicy.Default with { ShouldStore = status => status is 202 or 503 };

        var ok = await Run(policy, Work(200, "not kept"));
        Assert.False(ok.Stored);
        Assert.Equal(1, Counting.Releases);

        var unavailable = await Run(policy, Work(503, "kept"));
        Assert.True(unavailable.Stored);

        var replay = await Run(policy);
        Assert.Equal(IdempotencyOutcomeKind.Replayed, replay.Kind);
        Assert.Equal(503, replay.Response!.StatusCode);
        Assert.Equal(2, _runs);
    }

    [Fact]
    public async Task Oversized_body_is_recorded_without_it_and_never_runs_again()
    {
        var policy = IdempotencyPolicy.Default with { MaxStoredBodyBytes = 4 };

        var first = await Run(policy, Work(201, "0123456789"));
        Assert.Equal(IdempotencyOutcomeKind.Executed, first.Kind);
        Assert.True(first.Stored);
        Assert.False(first.Response!.BodyOmitted);
        Assert.Equal("0123456789", first.Text()); // the caller that ran it gets its whole response

        var replay = await Run(policy);
        Assert.Equal(IdempotencyOutcomeKind.Replayed, replay.Kind);
        Assert.True(replay.Response!.BodyOmitted);
        Assert.True(replay.Response.Body.IsEmpty);
        Assert.Equal(201, replay.Response.StatusCode);
        Assert.Equal(1, _runs);
    }

    [Fact]
    public async Task Body_at_the_limit_is_kept()
    {
        var policy = IdempotencyPolicy.Default with { MaxStoredBodyBytes = 4 };
        await Run(policy, Work(201, "0123"));
        var replay = await Run(policy);
        Assert.False(replay.Response!.BodyOmitted);
        Assert.Equal("0123", replay.Text());
    }

    [Fact]
    public async Task Reject_with_an_in_flight_owner_is_a_conflict_at_once()
    {
        var blocked = new BlockedWork();
        var first = Run(work: blocked.RunAsync);
        await blocked.Started.Task.WaitAsync(Tests.Guard);

        var outcome = await Run(IdempotencyPolicy.Default with { ConflictBehavior = ConflictBehavior.Reject });

        Assert.Equal(IdempotencyOutcomeKind.Conflict, outcome.Kind);
        Assert.NotNull(outcome.RetryAfter);
        Assert.True(outcome.RetryAfter >= TimeSpan.FromSeconds(1), $"{outcome.RetryAfter}");
        Assert.Null(outcome.Response);
        Assert.Equal(0, _runs);
        Assert.Equal(0, Counting.Waits);

        blocked.Release.SetResult(Tests.Response(200, "ok"));
        await first;
        Assert.Equal(1, blocked.Runs);
    }

    [Fact]
    public async Task Reject_retry_after_is_at_least_one_second_when_the_lease_is_nearly_over()
    {
        var deadOwner = Guid.NewGuid();
        await _h.Memory.TryClaimAsync(new ClaimRequest(_key, Fp, deadOwner, TimeSpan.FromSeconds(2), TimeSpan.FromHours(1)), default);
        _h.Time.Advance(TimeSpan.FromMilliseconds(1900));

        var outcome = await Run(IdempotencyPolicy.Default with { ConflictBehavior = ConflictBehavior.Reject });
        Assert.Equal(IdempotencyOutcomeKind.Conflict, outcome.Kind);
        Assert.Equal(TimeSpan.FromSeconds(1), outcome.RetryAfter);
    }

    [Fact]
    public async Task A_store_failure_while_waiting_on_a_live_owner_is_503_even_when_failing_open()
    {
        var blocked = new BlockedWork();
        var first = Run(work: blocked.RunAsync);
        await blocked.Started.Task.WaitAsync(Tests.Guard);

        var second = Run(IdempotencyPolicy.Default with { StoreFailureMode = StoreFailureMode.FailOpen }, Work(200, "must not run"));
        await _h.Time.WaitForTimerAsync(Tests.FirstPoll); // parked, waiting on the store
        Counting.FailWith = new InvalidOperationException("store went down while waiting");
        _h.Time.Advance(Tests.FirstPoll);
        var waiter = await second.WaitAsync(Tests.Guard);

        Assert.Equal(IdempotencyOutcomeKind.StoreUnavailable, waiter.Kind);
        Assert.Equal(0, _runs); // running it unprotected would duplicate the live owner's work
        Counting.FailWith = null;
        blocked.Release.SetResult(Tests.Response(201, "owner"));
        await first.WaitAsync(Tests.Guard);
    }

    [Fact]
    public async Task Wait_replays_the_owners_response_once_it_completes()
    {
        var blocked = new BlockedWork();
        var first = Run(work: blocked.RunAsync);
        await blocked.Started.Task.WaitAsync(Tests.Guard);

        var second = Run(work: Work(200, "must not run"));
        await _h.Time.WaitForTimerAsync(Tests.FirstPoll); // parked, waiting on the store
        Assert.False(second.IsCompleted);

        blocked.Release.SetResult(Tests.Response(201, "from the owner"));
        var owner = await first.WaitAsync(Tests.Guard);
        var waiter = await second.WaitAsync(Tests.Guard);

        Assert.Equal(IdempotencyOutcomeKind.Executed, owner.Kind);
        Assert.Equal(IdempotencyOutcomeKind.Replayed, waiter.Kind);
        Assert.True(waiter.Waited);
        Assert.Equal("from the owner", waiter.Text());
        Assert.Equal(1, blocked.Runs);
        Assert.Equal(0, _runs);
    }

    [Fact]
    public async Task Wait_after_a_release_runs_the_work_itself()
    {
        var blocked = new BlockedWork();
        var first = Run(work: blocked.RunAsync);
        await blocked.Started.Task.WaitAsync(Tests.Guard);

        var second = Run(work: Work(201, "second"));
        await _h.Time.WaitForTimerAsync(Tests.FirstPoll);

        blocked.Release.SetResult(Tests.Response(503, "down"));
        Assert.False((await first.WaitAsync(Tests.Guard)).Stored);
        var waiter = await second.WaitAsync(Tests.Guard);

        Assert.Equal(IdempotencyOutcomeKind.Executed, waiter.Kind);
        Assert.True(waiter.Stored);
        Assert.Equal(1, _runs);
    }

    [Fact]
    public async Task Wait_timeout_is_a_conflict()
    {
        // A live owner that never finishes (its lease is long, so nobody takes over).
        await _h.Memory.TryClaimAsync(new ClaimRequest(_key, Fp, Guid.NewGuid(), TimeSpan.FromHours(1), TimeSpan.FromHours(2)), default);
        var policy = IdempotencyPolicy.Default with { WaitTimeout = TimeSpan.FromSeconds(5) };

        var waiter = Run(policy);
        await _h.Time.WaitForTimerAsync(Tests.FirstPoll);
        Assert.False(waiter.IsCompleted);

        _h.Time.Advance(TimeSpan.FromSeconds(6));
        var outcome = await waiter.WaitAsync(Tests.Guard);

        Assert.Equal(IdempotencyOutcomeKind.Conflict, outcome.Kind);
        Assert.True(outcome.RetryAfter >= TimeSpan.FromSeconds(1));
        Assert.Equal(0, _runs);
    }

    [Fact]
    public async Task Caller_cancellation_while_waiting_throws_and_does_not_run()
    {
        await _h.Memory.TryClaimAsync(new ClaimRequest(_key, Fp, Guid.NewGuid(), TimeSpan.FromHours(1), TimeSpan.FromHours(2)), default);
        using var caller = new CancellationTokenSource();

        var waiter = Run(cancellationToken: caller.Token);
        await _h.Time.WaitForTimerAsync(Tests.FirstPoll);
        await caller.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiter.WaitAsync(Tests.Guard));
        Assert.Equal(0, _runs);
    }

    [Fact]
    public async Task Lease_is_renewed_while_the_work_runs()
    {
        var policy = IdempotencyPolicy.Default with { Lease = TimeSpan.FromSeconds(3) };
        var interval = TimeSpan.FromSeconds(1);
        var blocked = new BlockedWork();

        var owner = Run(policy, blocked.RunAsync);
        var execution = await blocked.Started.Task.WaitAsync(Tests.Guard);
        await _h.Time.WaitForTimerAsync(interval); // the heartbeat's first delay

        const int steps = 12; // 12 s: four leases
        for (var i = 1; i <= steps; i++)
        {
            _h.Time.Advance(interval);
            await _h.Time.WaitForTimerAsync(interval); // renewed, and parked on the next delay
            Assert.Equal(i, Counting.Renews);
        }

        // Another node with the same request finds the lease live: no takeover.
        var contender = await _h.Memory.TryClaimAsync(new ClaimRequest(_key, Fp, Guid.NewGuid(), policy.Lease, policy.Retention), default);
        Assert.Equal(ClaimStatus.InFlight, contender.Status);
        Assert.Equal(execution.OwnerToken, contender.Record!.OwnerToken);
        Assert.False(execution.CancellationToken.IsCancellationRequested);

        blocked.Release.SetResult(Tests.Response(201, "done"));
        var outcome = await owner.WaitAsync(Tests.Guard);
        Assert.True(outcome.Stored);
        Assert.False(outcome.TookOver);
    }

    [Fact]
    public async Task Refused_renewal_cancels_the_work()
    {
        var policy = IdempotencyPolicy.Default with { Lease = TimeSpan.FromSeconds(3) };
        _h.Hooks.OnRenew = (_, _, _, _) => ValueTask.FromResult(false);
        var work = new CancellableWork();

        var owner = Run(policy, work.RunAsync);
        var execution = await work.Started.Task.WaitAsync(Tests.Guard);
        await _h.Time.WaitForTimerAsync(TimeSpan.FromSeconds(1));
        Assert.False(execution.CancellationToken.IsCancellationRequested);

        _h.Time.Advance(TimeSpan.FromSeconds(1));
        await work.Cancelled.Task.WaitAsync(Tests.Guard);

        Assert.True(execution.CancellationToken.IsCancellationRequested);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => owner.WaitAsync(Tests.Guard));
        Assert.Equal(0, Counting.Completes);
    }

    [Fact]
    public async Task Store_outage_during_the_work_cancels_it()
    {
        var policy = IdempotencyPolicy.Default with { Lease = TimeSpan.FromSeconds(3) };
        var work = new CancellableWork();

        var owner = Run(policy, work.RunAsync);
        var execution = await work.Started.Task.WaitAsync(Tests.Guard);
        await _h.Time.WaitForTimerAsync(TimeSpan.FromSeconds(1));
        _h.Time.Advance(TimeSpan.FromSeconds(1));
        await _h.Time.WaitForTimerAsync(TimeSpan.FromSeconds(1)); // one good renewal
        Assert.Equal(1, Counting.Renews);
        Assert.False(execution.CancellationToken.IsCancellationRequested);

        Counting.FailWith = new TimeoutException("store down");
        _h.Time.Advance(TimeSpan.FromSeconds(1));
        await work.Cancelled.Task.WaitAsync(Tests.Guard);

        Assert.True(execution.CancellationToken.IsCancellationRequested);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => owner.WaitAsync(Tests.Guard));
    }

    [Fact]
    public async Task Execution_timeout_cancels_the_work_and_releases_the_key()
    {
        var policy = IdempotencyPolicy.Default with { ExecutionTimeout = TimeSpan.FromSeconds(5) };
        var work = new CancellableWork();

        var owner = Run(policy, work.RunAsync);
        var execution = await work.Started.Task.WaitAsync(Tests.Guard);
        _h.Time.Advance(TimeSpan.FromSeconds(4));
        Assert.False(execution.CancellationToken.IsCancellationRequested);

        _h.Time.Advance(TimeSpan.FromSeconds(1));
        await work.Cancelled.Task.WaitAsync(Tests.Guard);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => owner.WaitAsync(Tests.Guard));
        Assert.Equal(1, Counting.Releases);

        Assert.Equal(IdempotencyOutcomeKind.Executed, (await Run(policy)).Kind);
        Assert.Equal(1, _runs);
    }

    [Fact]
    public async Task Caller_going_away_does_not_cancel_the_work_and_its_result_is_stored()
    {
        using var caller = new CancellationTokenSource();
        var blocked = new BlockedWork();

        var owner = Run(work: blocked.RunAsync, cancellationToken: caller.Token);
        var execution = await blocked.Started.Task.WaitAsync(Tests.Guard);
        await caller.CancelAsync();
        Assert.False(execution.CancellationToken.IsCancellationRequested);

        blocked.Release.SetResult(Tests.Response(201, "finished anyway"));
        var outcome = await owner.WaitAsync(Tests.Guard);
        Assert.Equal(IdempotencyOutcomeKind.Executed, outcome.Kind);
        Assert.True(outcome.Stored);
        Assert.False(execution.CancellationToken.IsCancellationRequested);

        var retry = await Run();
        Assert.Equal(IdempotencyOutcomeKind.Replayed, retry.Kind);
        Assert.Equal("finished anyway", retry.Text());
        Assert.Equal(0, _runs);
    }

    [Fact]
    public async Task Expired_lease_of_a_dead_owner_is_taken_over_and_the_dead_owner_is_fenced()
    {
        var lease = TimeSpan.FromSeconds(3);
        var deadOwner = Guid.NewGuid();
        var claim = await _h.Memory.TryClaimAsync(new ClaimRequest(_key, Fp, deadOwner, lease, TimeSpan.FromHours(24)), default);
        Assert.Equal(ClaimStatus.Claimed, claim.Status);

        _h.Time.Advance(TimeSpan.FromSeconds(2));
        var early = await Run(IdempotencyPolicy.Default with { ConflictBehavior = ConflictBehavior.Reject, Lease = lease });
        Assert.Equal(IdempotencyOutcomeKind.Conflict, early.Kind);

        _h.Time.Advance(TimeSpan.FromSeconds(2)); // past the lease, never renewed
        var outcome = await Run(IdempotencyPolicy.Default with { Lease = lease }, Work(201, "new owner"));

        Assert.Equal(IdempotencyOutcomeKind.Executed, outcome.Kind);
        Assert.True(outcome.TookOver);
        Assert.True(outcome.Stored);
        Assert.Equal(1, _runs);

        Assert.False(await _h.Memory.CompleteAsync(_key, deadOwner, Tests.Response(200, "stale"), TimeSpan.FromHours(24), default));
        Assert.False(await _h.Memory.RenewAsync(_key, deadOwner, lease, default));
        Assert.False(await _h.Memory.ReleaseAsync(_key, deadOwner, default));

        var replay = await Run();
        Assert.Equal("new owner", replay.Text());
    }

    [Fact]
    public async Task A_waiter_takes_over_when_the_owner_dies()
    {
        var lease = TimeSpan.FromSeconds(3);
        await _h.Memory.TryClaimAsync(new ClaimRequest(_key, Fp, Guid.NewGuid(), lease, TimeSpan.FromHours(24)), default);

        var waiter = Run(IdempotencyPolicy.Default with { Lease = lease });
        await _h.Time.WaitForTimerAsync(Tests.FirstPoll);
        _h.Time.Advance(lease);

        // Each poll re-checks the store; past the lease the claim takes over.
        var outcome = await waiter.WaitAsync(Tests.Guard);
        Assert.Equal(IdempotencyOutcomeKind.Executed, outcome.Kind);
        Assert.True(outcome.TookOver);
        Assert.Equal(1, _runs);
    }

    [Theory]
    [InlineData(typeof(InvalidOperationException))]
    [InlineData(typeof(TimeoutException))]
    [InlineData(typeof(IOException))]
    public async Task Store_outage_fails_closed(Type exceptionType)
    {
        Counting.FailWith = (Exception)Activator.CreateInstance(exceptionType)!;

        var outcome = await Run();

        Assert.Equal(IdempotencyOutcomeKind.StoreUnavailable, outcome.Kind);
        Assert.NotNull(outcome.RetryAfter);
        Assert.True(outcome.RetryAfter > TimeSpan.Zero);
        Assert.Null(outcome.Response);
        Assert.Equal(0, _runs);
    }

    [Fact]
    public async Task Store_outage_with_fail_open_runs_unprotected()
    {
        Counting.FailWith = new InvalidOperationException("store down");
        Guid? owner = null;

        var outcome = await Run(IdempotencyPolicy.Default with { StoreFailureMode = StoreFailureMode.FailOpen }, execution =>
        {
            owner = execution.OwnerToken;
            Interlocked.Increment(ref _runs);
            return ValueTask.FromResult(Tests.Response(201, "unprotected"));
        });

        Assert.Equal(IdempotencyOutcomeKind.ExecutedUnprotected, outcome.Kind);
        Assert.Equal("unprotected", outcome.Text());
        Assert.Equal(1, _runs);
        Assert.Equal(Guid.Empty, owner);
    }

    [Fact]
    public async Task A_store_that_never_answers_is_unavailable_after_the_store_timeout()
    {
        var storeTimeout = TimeSpan.FromSeconds(5);
        _h.Hooks.OnClaim = async (_, ct) =>
        {
            await Task.Delay(Timeout.Infinite, ct);
            throw new InvalidOperationException("unreachable");
        };

        var pending = Run(IdempotencyPolicy.Default with { StoreTimeout = storeTimeout });
        await _h.Time.WaitForTimerAsync(storeTimeout); // the claim's deadline is armed
        Assert.False(pending.IsCompleted);

        _h.Time.Advance(storeTimeout);
        var outcome = await pending.WaitAsync(Tests.Guard);

        Assert.Equal(IdempotencyOutcomeKind.StoreUnavailable, outcome.Kind);
        Assert.NotNull(outcome.RetryAfter);
        Assert.Equal(0, _runs);
    }

    [Fact]
    public async Task A_store_call_that_ignores_its_cancellation_is_abandoned_after_a_grace_period()
    {
        // A driver stuck on a dead connection: the call never ends, whatever its token says.
        var stuck = new TaskCompletionSource<ClaimResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        CancellationToken seen = default;
        _h.Hooks.OnClaim = (_, ct) =>
        {
            seen = ct;
            return new ValueTask<ClaimResult>(stuck.Task);
        };

        var storeTimeout = TimeSpan.FromSeconds(5);
        var pending = Run(IdempotencyPolicy.Default with { StoreTimeout = storeTimeout });
        await _h.Time.WaitForTimerAsync(storeTimeout);
        _h.Time.Advance(storeTimeout);

        // Naive: awaiting the store's own task after cancelling its token, as the executor once did, waits forever.
        Assert.True(seen.IsCancellationRequested);
        Assert.False(stuck.Task.IsCompleted);

        _h.Time.Advance(IdempotencyExecutor.AbandonGrace);
        var outcome = await pending.WaitAsync(Tests.Guard);

        Assert.Equal(IdempotencyOutcomeKind.StoreUnavailable, outcome.Kind);
        Assert.NotNull(outcome.RetryAfter);
        Assert.Equal(0, _runs);
    }

    [Fact]
    public async Task Caller_cancellation_during_the_claim_is_not_a_store_failure()
    {
        using var caller = new CancellationTokenSource();
        _h.Hooks.OnClaim = async (_, ct) =>
        {
            await Task.Delay(Timeout.Infinite, ct);
            throw new InvalidOperationException("unreachable");
        };

        var pending = Run(IdempotencyPolicy.Default with { StoreFailureMode = StoreFailureMode.FailOpen }, cancellationToken: caller.Token);
        await _h.Time.WaitForTimerAsync(IdempotencyPolicy.Default.StoreTimeout);
        await caller.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending.WaitAsync(Tests.Guard));
        Assert.Equal(0, _runs); // not run unprotected either
    }

    [Fact]
    public async Task Failed_completion_still_returns_the_response()
    {
        var outcome = await Run(work: execution =>
        {
            Interlocked.Increment(ref _runs);
            Counting.FailWith = new InvalidOperationException("store went down mid-request");
            return ValueTask.FromResult(Tests.Response(201, "done"));
        });

        Assert.Equal(IdempotencyOutcomeKind.Executed, outcome.Kind);
        Assert.False(outcome.Stored);
        Assert.Equal("done", outcome.Text());
        Assert.Equal(1, Counting.Completes);
    }

    [Fact]
    public async Task Different_keys_do_not_interfere()
    {
        await Run(work: Work(201, "one"));
        var other = await Executor.ExecuteAsync(
            IdempotencyScope.ComputeStoreKey("user-2", "POST /orders", "key-1"),
            Fp,
            IdempotencyPolicy.Default,
            Work(201, "two"),
            default);

        Assert.Equal(IdempotencyOutcomeKind.Executed, other.Kind);
        Assert.Equal(2, _runs);
    }
}
