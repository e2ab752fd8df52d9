using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Idem;

/// <summary>
/// Runs an operation at most once per key and gives every caller with that key the same stored outcome:
/// claim, then run and complete (or release), replay, wait for an in-flight owner, or refuse.
/// Usable from HTTP middleware, a gateway or a background worker alike.
/// </summary>
public sealed class IdempotencyExecutor
{
    private static readonly TimeSpan FirstPollInterval = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan MaxPollInterval = TimeSpan.FromSeconds(1);

    // How many times one call may lose its key to a newer owner and try again before it answers 409.
    private const int MaxLostClaims = 3;

    // A completion the store could not take is tried again (RetryCompletionAsync): at most this many attempts, within
    // one lease of the first failure, waiting from the first delay, doubled each time, up to the longest.
    internal const int MaxCompletionAttempts = 12;
    private static readonly TimeSpan FirstCompletionRetryDelay = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan MaxCompletionRetryDelay = TimeSpan.FromSeconds(1);

    [ThreadStatic]
    private static CancellationTokenSource? t_idleDeadline;

    private readonly IIdempotencyStore _store;
    private readonly TimeProvider _timeProvider;
    private readonly IdempotencyMetrics _metrics;
    private readonly ILogger _logger;

    /// <summary>Creates an executor over <paramref name="store"/>.</summary>
    public IdempotencyExecutor(IIdempotencyStore store, IdempotencyMetrics metrics, TimeProvider? timeProvider = null, ILogger<IdempotencyExecutor>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(metrics);
        _store = store;
        RecoveryPointStore = IIdempotencyStoreDecorator.Find<IRecoveryPointStore>(store);
        TransactionalStore = IIdempotencyStoreDecorator.Find<ITransactionalIdempotencyStore>(store);
        _metrics = metrics;
        _timeProvider = timeProvider ?? TimeProvider.System;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>The store this executor claims in.</summary>
    public IIdempotencyStore Store => _store;

    /// <summary>Where recovery points are recorded: the store, or the one beneath a cache in front of it; <see langword="null"/> when none records them.</summary>
    internal IRecoveryPointStore? RecoveryPointStore { get; }

    /// <summary>Where a joined transaction completes: the store, or the one beneath a cache in front of it; <see langword="null"/> when none can.</summary>
    internal ITransactionalIdempotencyStore? TransactionalStore { get; }

    /// <summary>
    /// Runs <paramref name="work"/> once for <paramref name="storeKey"/>, or returns what another caller's run stored.
    /// </summary>
    /// <param name="storeKey">The scoped key (see <see cref="IdempotencyScope.ComputeStoreKey"/>).</param>
    /// <param name="fingerprint">The request fingerprint (see <see cref="RequestFingerprint"/>).</param>
    /// <param name="policy">How the operation is protected.</param>
    /// <param name="work">
    /// The operation. It runs under <see cref="IdempotentExecution.CancellationToken"/>, not under
    /// <paramref name="cancellationToken"/>: a caller that goes away does not cancel work that a retry will want.
    /// Its response is stored when <see cref="IdempotencyPolicy.ShouldStore"/> says so; an exception releases the key.
    /// </param>
    /// <param name="cancellationToken">Cancels claiming and waiting on behalf of this caller.</param>
    public ValueTask<IdempotencyOutcome> ExecuteAsync(
        string storeKey,
        string fingerprint,
        IdempotencyPolicy policy,
        Func<IdempotentExecution, ValueTask<StoredResponse>> work,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(work);
        return ExecuteAsync(storeKey, fingerprint, policy, work, static (execution, work) => work(execution), cancellationToken);
    }

    /// <summary>
    /// Runs <paramref name="work"/> once for <paramref name="storeKey"/>, or returns what another caller's run stored;
    /// the overload for hot paths, where <paramref name="state"/> replaces a closure allocated per call.
    /// </summary>
    /// <typeparam name="TState">What <paramref name="work"/> needs, passed back to it.</typeparam>
    /// <param name="storeKey">The scoped key (see <see cref="IdempotencyScope.ComputeStoreKey"/>).</param>
    /// <param name="fingerprint">The request fingerprint (see <see cref="RequestFingerprint"/>).</param>
    /// <param name="policy">How the operation is protected.</param>
    /// <param name="state">Passed to <paramref name="work"/>.</param>
    /// <param name="work">The operation, as in <see cref="ExecuteAsync(string, string, IdempotencyPolicy, Func{IdempotentExecution, ValueTask{StoredResponse}}, CancellationToken)"/>.</param>
    /// <param name="cancellationToken">Cancels claiming and waiting on behalf of this caller.</param>
    public ValueTask<IdempotencyOutcome> ExecuteAsync<TState>(
        string storeKey,
        string fingerprint,
        IdempotencyPolicy policy,
        TState state,
        Func<IdempotentExecution, TState, ValueTask<StoredResponse>> work,
        CancellationToken cancellationToken) =>
        ExecuteAsync(storeKey, fingerprint, metadata: null, policy, state, work, cancellationToken);

    /// <summary>
    /// Runs <paramref name="work"/> once for <paramref name="storeKey"/>, or returns what another caller's run stored, and
    /// passes <paramref name="metadata"/> with the claim so that stores that keep it let operators find the record by
    /// principal and operation (see <see cref="ClaimRequest.Metadata"/>).
    /// </summary>
    /// <typeparam name="TState">What <paramref name="work"/> needs, passed back to it.</typeparam>
    /// <param name="storeKey">The scoped key (see <see cref="IdempotencyScope.ComputeStoreKey"/>).</param>
    /// <param name="fingerprint">The request fingerprint (see <see cref="RequestFingerprint"/>).</param>
    /// <param name="metadata">Who claims and for which operation (see <see cref="IdempotencyRecordMetadata.Create"/>); <see langword="null"/> when unknown.</param>
    /// <param name="policy">How the operation is protected.</param>
    /// <param name="state">Passed to <paramref name="work"/>.</param>
    /// <param name="work">The operation, as in <see cref="ExecuteAsync(string, string, IdempotencyPolicy, Func{IdempotentExecution, ValueTask{StoredResponse}}, CancellationToken)"/>.</param>
    /// <param name="cancellationToken">Cancels claiming and waiting on behalf of this caller.</param>
    public async ValueTask<IdempotencyOutcome> ExecuteAsync<TState>(
        string storeKey,
        string fingerprint,
        IdempotencyRecordMetadata? metadata,
        IdempotencyPolicy policy,
        TState state,
        Func<IdempotentExecution, TState, ValueTask<StoredResponse>> work,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(storeKey);
        ArgumentNullException.ThrowIfNull(fingerprint);
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentNullException.ThrowIfNull(work);
        if (policy.JoinedTransaction && TransactionalStore is null)
        {
            throw new InvalidOperationException(
                $"The policy asks for a joined transaction, but the idempotency store {_store.GetType().Name} cannot complete inside a database transaction "
                + $"(it does not implement {nameof(ITransactionalIdempotencyStore)}). Use the SQLite or PostgreSQL store on the same database as the data, or turn JoinedTransaction off.");
        }

        using var activity = IdempotencyDiagnostics.Source.HasListeners() ? IdempotencyDiagnostics.Source.StartActivity("idem.execute") : null;
        activity?.SetTag("idem.key", storeKey);

        var started = Stopwatch.GetTimestamp();
        var ownerToken = OwnerTokens.Next();
        var claimRequest = new ClaimRequest(storeKey, fingerprint, ownerToken, policy.Lease, policy.Retention) { Metadata = metadata };
        var lostClaims = 0;
        ClaimResult claim;
        try
        {
            claim = await CallStoreAsync(static (s, r, ct) => s.TryClaimAsync(r, ct), claimRequest, policy, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsStoreFailure(ex, cancellationToken))
        {
            return await OnStoreUnavailableAsync(ex, storeKey, policy, state, work, activity).ConfigureAwait(false);
        }

        _metrics.ClaimDuration(started);

        var waited = false;
        var pollInterval = FirstPollInterval;
        var waitDeadline = policy.ConflictBehavior == ConflictBehavior.Wait ? _timeProvider.GetUtcNow() + policy.WaitTimeout : DateTimeOffset.MinValue;
        while (true)
        {
            switch (claim.Status)
            {
                case ClaimStatus.Claimed:
                    if (claim.TookOver)
                    {
                        Log.TookOver(_logger, storeKey);
                    }

                    var executed = await RunClaimedAsync(storeKey, claimRequest.OwnerToken, policy, state, work, claim.TookOver, activity).ConfigureAwait(false);
                    if (executed is not null)
                    {
                        return executed;
                    }

                    // This owner lost the key while it worked and its joined transaction was rolled back: answer as a
                    // later duplicate would be (replay the winner, wait for it, or 409), with a fresh owner token.
                    if (++lostClaims > MaxLostClaims)
                    {
                        return Finish(activity, IdempotencyOutcomes.Conflicted, new IdempotencyOutcome(IdempotencyOutcomeKind.Conflict, retryAfter: TimeSpan.FromSeconds(1)));
                    }

                    claimRequest = claimRequest with { OwnerToken = OwnerTokens.Next() };
                    try
                    {
                        claim = await CallStoreAsync(static (s, r, ct) => s.TryClaimAsync(r, ct), claimRequest, policy, cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (IsStoreFailure(ex, cancellationToken))
                    {
                        return FailClosed(ex, storeKey, activity);
                    }

                    continue;

                case ClaimStatus.Completed when claim.Record!.Fingerprint != fingerprint:
                case ClaimStatus.InFlight when claim.Record!.Fingerprint != fingerprint:
                    Log.FingerprintMismatch(_logger, storeKey);
                    return Finish(activity, IdempotencyOutcomes.Mismatched, new IdempotencyOutcome(IdempotencyOutcomeKind.FingerprintMismatch));

                case ClaimStatus.Completed:
                    var response = OriginTrace.Detach(claim.Record!.Response!, activity);
                    _metrics.ReplayDuration(started);
                    if (response.BodyOmitted)
                    {
                        _metrics.ReplayNotRetained();
                    }

                    Log.Replayed(_logger, storeKey, response.StatusCode);
                    return Finish(
                        activity,
                        waited ? IdempotencyOutcomes.Waited : IdempotencyOutcomes.Replayed,
                        new IdempotencyOutcome(IdempotencyOutcomeKind.Replayed, response) { Waited = waited });
            }

            // In flight under another owner's live lease.
            var now = _timeProvider.GetUtcNow();
            var record = claim.Record!;
            if (now >= waitDeadline)
            {
                Log.Conflict(_logger, storeKey);
                var retryAfter = record.LeaseExpiresAt - now;
                return Finish(
                    activity,
                    IdempotencyOutcomes.Conflicted,
                    new IdempotencyOutcome(IdempotencyOutcomeKind.Conflict, retryAfter: retryAfter > TimeSpan.FromSeconds(1) ? retryAfter : TimeSpan.FromSeconds(1)));
            }

            waited = true;
            try
            {
                // Woken by the store's notification; the poll interval only bounds the wait for what sends none
                // (an owner that died and whose lease must run out).
                var wait = Min(pollInterval, waitDeadline - now);
                await _store.WaitForChangeAsync(storeKey, record.OwnerToken, wait, cancellationToken).ConfigureAwait(false);
                pollInterval = Min(pollInterval * 2, MaxPollInterval);
                claim = await CallStoreAsync(static (s, r, ct) => s.TryClaimAsync(r, ct), claimRequest, policy, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (IsStoreFailure(ex, cancellationToken))
            {
                // Another owner is known to hold the key: running unprotected now would duplicate it, even when the
                // policy fails open, so the answer is 503 whatever the failure mode.
                return FailClosed(ex, storeKey, activity);
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="work"/> once for (<paramref name="scope"/>, <paramref name="key"/>) and returns its result to
    /// every caller with that key, the first one included; for background workers and other callers without HTTP.
    /// </summary>
    /// <typeparam name="TResult">The result, stored as JSON.</typeparam>
    /// <param name="scope">What the key applies to, for example a job name; keys of different scopes never meet.</param>
    /// <param name="key">The idempotency key, for example a message id or a natural key.</param>
    /// <param name="fingerprint">
    /// The fingerprint of the input (see <see cref="RequestFingerprint.Compute"/>); the same key with another
    /// fingerprint throws <see cref="IdempotencyException"/>. Pass the key itself when inputs cannot differ.
    /// </param>
    /// <param name="work">The operation; see <see cref="ExecuteAsync"/> for its cancellation.</param>
    /// <param name="policy">How the operation is protected; <see cref="IdempotencyPolicy.Default"/> when <see langword="null"/>.</param>
    /// <param name="jsonOptions">How the result is serialized.</param>
    /// <param name="cancellationToken">Cancels claiming and waiting.</param>
    /// <exception cref="IdempotencyException">The key is in flight elsewhere, was used with another fingerprint, or the store is unavailable.</exception>
    public async ValueTask<TResult> ExecuteOnceAsync<TResult>(
        string scope,
        string key,
        string fingerprint,
        Func<IdempotentExecution, ValueTask<TResult>> work,
        IdempotencyPolicy? policy = null,
        JsonSerializerOptions? jsonOptions = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        var storeKey = IdempotencyScope.ComputeStoreKey(string.Empty, scope, key);
        var outcome = await ExecuteAsync(
            storeKey,
            fingerprint,
            IdempotencyRecordMetadata.Create(string.Empty, scope),
            policy ?? IdempotencyPolicy.Default,
            (Work: work, JsonOptions: jsonOptions),
            static async (execution, s) =>
            {
                var result = await s.Work(execution).ConfigureAwait(false);
                return new StoredResponse(200, null, JsonSerializer.SerializeToUtf8Bytes(result, s.JsonOptions));
            },
            cancellationToken).ConfigureAwait(false);

        return outcome.Kind switch
        {
            IdempotencyOutcomeKind.Executed or IdempotencyOutcomeKind.Replayed or IdempotencyOutcomeKind.ExecutedUnprotected when !outcome.Response!.BodyOmitted
                => JsonSerializer.Deserialize<TResult>(outcome.Response!.Body.Span, jsonOptions)!,
            _ => throw new IdempotencyException(outcome),
        };
    }

    private async ValueTask<IdempotencyOutcome?> RunClaimedAsync<TState>(
        string storeKey,
        Guid ownerToken,
        IdempotencyPolicy policy,
        TState state,
        Func<IdempotentExecution, TState, ValueTask<StoredResponse>> work,
        bool tookOver,
        Activity? activity)
    {
        Log.Claimed(_logger, storeKey);
        // No timer of its own: the heartbeat's one timer also enforces the execution timeout.
        using var executionCts = new CancellationTokenSource();
        var heartbeat = new LeaseHeartbeat(this, storeKey, ownerToken, policy, executionCts);
        var execution = new IdempotentExecution(this, policy, storeKey, ownerToken, tookOver, executionCts.Token);

        StoredResponse response;
        try
        {
            execution.MakeCurrent();
            response = await work(execution, state).ConfigureAwait(false);
            execution.ThrowIfTransactionEscaped();
        }
        catch (Exception ex)
        {
            // A write outside the joined transaction is the clearer error than what it ended in (SQLite: busy).
            var refused = execution.OutsideWriteRefusal(ex);

            // Rolled back first: on SQLite a renewal in progress waits for the write lock the transaction holds.
            await execution.RollbackAsync().ConfigureAwait(false);
            await heartbeat.StopAsync().ConfigureAwait(false);
            if (execution.LostClaim)
            {
                // Fenced: the newer owner holds the key; nothing of this owner's was committed. Not a release.
                activity?.SetTag("idem.outcome", "lost_claim");
                return null;
            }

            Log.ReleasedAfterFailure(_logger, refused ?? ex, storeKey);
            await TryReleaseAsync(storeKey, ownerToken, policy).ConfigureAwait(false);
            activity?.SetTag("idem.outcome", "failed");
            if (refused is not null)
            {
                throw refused;
            }

            throw;
        }

        if (policy.JoinedTransaction)
        {
            return await CompleteJoinedAsync(storeKey, ownerToken, policy, execution, heartbeat, response, tookOver, activity).ConfigureAwait(false);
        }

        await heartbeat.StopAsync().ConfigureAwait(false);

        if (!policy.ShouldStore(response.StatusCode))
        {
            Log.ReleasedAfterStatus(_logger, storeKey, response.StatusCode);
            await TryReleaseAsync(storeKey, ownerToken, policy).ConfigureAwait(false);
            return Finish(activity, IdempotencyOutcomes.Executed, new IdempotencyOutcome(IdempotencyOutcomeKind.Executed, response) { TookOver = tookOver });
        }

        var toStore = WithinStoredLimit(storeKey, response, policy, activity);
        var stored = await CompleteAsync(storeKey, ownerToken, toStore, policy).ConfigureAwait(false);

        return Finish(activity, IdempotencyOutcomes.Executed, new IdempotencyOutcome(IdempotencyOutcomeKind.Executed, response) { Stored = stored, TookOver = tookOver });
    }

    /// <summary>
    /// Stores the response under the owner's token. A completion the store could not take (unreachable, restarting,
    /// timed out) is tried again in the background (<see cref="RetryCompletionAsync"/>): the operation has run and its
    /// response exists, and a key left claimed would let a retry run it again once the lease runs out. The caller is
    /// answered at once with the response it caused (<see cref="IdempotencyOutcome.Stored"/> false).
    /// </summary>
    private async ValueTask<bool> CompleteAsync(string storeKey, Guid ownerToken, StoredResponse toStore, IdempotencyPolicy policy)
    {
        try
        {
            var stored = await StoreCompletionAsync(storeKey, ownerToken, toStore, policy).ConfigureAwait(false);
            if (!stored)
            {
                Log.CompletionFenced(_logger, storeKey);
            }

            return stored;
        }
        catch (Exception ex) when (IsStoreFailure(ex, CancellationToken.None))
        {
            _metrics.StoreError("complete");
            Log.CompletionRetrying(_logger, ex, storeKey, 1, FirstCompletionRetryDelay);

            // The body may live in a pooled buffer that goes back to its pool when the caller has been answered.
            var copy = new StoredResponse(toStore.StatusCode, toStore.Headers, toStore.Body.ToArray()) { BodyOmitted = toStore.BodyOmitted };
            _ = RetryCompletionAsync(storeKey, ownerToken, copy, policy);
            return false;
        }
    }

    /// <summary>
    /// Tries a completion again after the store could not take it: at most <see cref="MaxCompletionAttempts"/> attempts
    /// in all, within one lease of the first failure, the delay doubling from 100 ms up to 1 s. Between attempts the
    /// lease is renewed once a third of it has passed, so a duplicate that arrives meanwhile finds the key in flight,
    /// waits, and gets the replay instead of taking over. A renewal or completion refused by the store's fencing (a
    /// newer owner took over while the store was out of reach) ends it: nothing of this owner's is stored. Never throws;
    /// it holds no lock and owns nothing but the copy of the response. A process that stops meanwhile loses it: the key
    /// then stays claimed until its lease runs out, as without the retry.
    /// </summary>
    private async Task RetryCompletionAsync(string storeKey, Guid ownerToken, StoredResponse toStore, IdempotencyPolicy policy)
    {
        try
        {
            var delay = FirstCompletionRetryDelay;
            var giveUpAt = _timeProvider.GetUtcNow() + policy.Lease;
            var extendedAt = _timeProvider.GetUtcNow() - policy.Lease; // unknown: renew at the first chance
            for (var attempt = 2; ; attempt++)
            {
                await Task.Delay(delay, _timeProvider).ConfigureAwait(false);
                delay = Min(delay * 2, MaxCompletionRetryDelay);
                if (_timeProvider.GetUtcNow() - extendedAt >= policy.Lease / 3)
                {
                    try
                    {
                        var renewed = await CallStoreAsync(
                            static (s, a, ct) => s.RenewAsync(a.storeKey, a.ownerToken, a.Lease, ct),
                            (storeKey, ownerToken, policy.Lease),
                            policy,
                            CancellationToken.None).ConfigureAwait(false);
                        if (!renewed)
                        {
                            // Taken over while the store was out of reach: the newer owner decides.
                            _metrics.CompletionRetried("fenced");
                            Log.CompletionFenced(_logger, storeKey);
                            return;
                        }

                        extendedAt = _timeProvider.GetUtcNow();
                    }
                    catch (Exception ex) when (IsStoreFailure(ex, CancellationToken.None))
                    {
                        _metrics.StoreError("renew");
                    }
                }

                try
                {
                    var stored = await StoreCompletionAsync(storeKey, ownerToken, toStore, policy).ConfigureAwait(false);
                    _metrics.CompletionRetried(stored ? "stored" : "fenced");
                    Log.CompletionRetried(_logger, storeKey, attempt, stored);
                    if (!stored)
                    {
                        Log.CompletionFenced(_logger, storeKey);
                    }

                    return;
                }
                catch (Exception ex) when (IsStoreFailure(ex, CancellationToken.None))
                {
                    _metrics.StoreError("complete");
                    if (attempt >= MaxCompletionAttempts || _timeProvider.GetUtcNow() + delay >= giveUpAt)
                    {
                        // The key stays claimed until its lease runs out; then a retry runs the operation again.
                        _metrics.CompletionRetried("abandoned");
                        Log.StoreFailed(_logger, ex, "complete", storeKey);
                        Log.CompletionAbandoned(_logger, storeKey, attempt);
                        return;
                    }

                    Log.CompletionRetrying(_logger, ex, storeKey, attempt, delay);
                }
            }
        }
        catch (Exception ex)
        {
            // Nothing may escape a task nobody awaits; a failure here is the store's or the logger's, already counted.
            _metrics.CompletionRetried("abandoned");
            Log.CompletionAbandoned(_logger, storeKey, 0);
            Log.StoreFailed(_logger, ex, "complete", storeKey);
        }
    }

    /// <summary>
    /// The joined transaction's end: the completion, fenced by the owner's token, in the operation's own transaction,
    /// then one commit for both. A lost key rolls everything back (the caller is answered as a duplicate); a failed
    /// commit rolls back and releases the key (503); a response that is not stored rolls back and releases.
    /// </summary>
    private async ValueTask<IdempotencyOutcome?> CompleteJoinedAsync(
        string storeKey,
        Guid ownerToken,
        IdempotencyPolicy policy,
        IdempotentExecution execution,
        LeaseHeartbeat heartbeat,
        StoredResponse response,
        bool tookOver,
        Activity? activity)
    {
        // Not awaited: on SQLite a renewal in progress waits for the write lock this transaction holds until its commit.
        // The transaction's own fenced UPDATE decides ownership from here on.
        heartbeat.StopWithoutWaiting();

        if (!policy.ShouldStore(response.StatusCode))
        {
            // A failure status: nothing of it is kept, the writes included, and a retry runs again.
            await execution.RollbackAsync().ConfigureAwait(false);
            Log.ReleasedAfterStatus(_logger, storeKey, response.StatusCode);
            await TryReleaseAsync(storeKey, ownerToken, policy).ConfigureAwait(false);
            return Finish(activity, IdempotencyOutcomes.Executed, new IdempotencyOutcome(IdempotencyOutcomeKind.Executed, response) { TookOver = tookOver });
        }

        var toStore = WithinStoredLimit(storeKey, response, policy, activity);
        bool committed;
        try
        {
            committed = await execution.CommitWithCompletionAsync(toStore, policy.Retention).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            await execution.RollbackAsync().ConfigureAwait(false);
            _metrics.StoreError("commit");
            Log.JoinedCommitFailed(_logger, ex, storeKey);
            await TryReleaseAsync(storeKey, ownerToken, policy).ConfigureAwait(false);
            return Finish(activity, IdempotencyOutcomes.StoreError, new IdempotencyOutcome(IdempotencyOutcomeKind.StoreUnavailable, retryAfter: TimeSpan.FromSeconds(1)));
        }

        if (!committed)
        {
            OnStaleOwnerRolledBack(storeKey);
            return null;
        }

        return Finish(activity, IdempotencyOutcomes.Executed, new IdempotencyOutcome(IdempotencyOutcomeKind.Executed, response) { Stored = true, TookOver = tookOver });
    }

    private StoredResponse WithinStoredLimit(string storeKey, StoredResponse response, IdempotencyPolicy policy, Activity? activity)
    {
        if (response.BodyOmitted || response.Body.Length > policy.MaxStoredBodyBytes)
        {
            Log.BodyOmitted(_logger, storeKey, policy.MaxStoredBodyBytes);
            response = response.WithoutBody();
        }

        // Replays link to this activity: its trace context travels with the record (see OriginTrace).
        return OriginTrace.Attach(response, activity);
    }

    internal void OnStaleOwnerRolledBack(string storeKey)
    {
        _metrics.StaleOwnerRolledBack();
        Log.StaleOwnerRolledBack(_logger, storeKey);
    }

    internal void OnPhaseSkipped(string storeKey, string phase)
    {
        _metrics.Phase("resumed");
        Log.PhaseSkipped(_logger, storeKey, phase);
    }

    internal void OnPhaseRecorded(string storeKey, string phase)
    {
        _metrics.Phase("recorded");
        Log.PhaseRecorded(_logger, storeKey, phase);
    }

    /// <summary>
    /// Renews a claim's lease every third of it while the work runs. Until the first renewal is due it is one timer
    /// and nothing else: almost every execution ends before that, so the heartbeat must cost them next to nothing
    /// (a delay task, its state machine and a cancellation source per execution showed up in the benchmarks).
    /// </summary>
    private sealed class LeaseHeartbeat
    {
        private readonly IdempotencyExecutor _executor;
        private readonly string _storeKey;
        private readonly Guid _ownerToken;
        private readonly IdempotencyPolicy _policy;
        private readonly CancellationTokenSource _executionCts;
        private readonly TimeSpan _interval;
        private readonly DateTimeOffset _executionDeadline;
        private readonly ITimer _timer;
        private readonly Lock _gate = new();
        private CancellationTokenSource? _stopCts;
        private Task? _renewing;
        private bool _stopped;

        public LeaseHeartbeat(IdempotencyExecutor executor, string storeKey, Guid ownerToken, IdempotencyPolicy policy, CancellationTokenSource executionCts)
        {
            _executor = executor;
            _storeKey = storeKey;
            _ownerToken = ownerToken;
            _policy = policy;
            _executionCts = executionCts;
            _interval = policy.Lease / 3;
            _executionDeadline = executor._timeProvider.GetUtcNow() + policy.ExecutionTimeout;
            _timer = executor._timeProvider.CreateTimer(static state => ((LeaseHeartbeat)state!).OnDue(), this, Min(_interval, policy.ExecutionTimeout), Timeout.InfiniteTimeSpan);
        }

        /// <summary>Stops renewing and waits for a renewal in progress, which is cancelled. Never throws.</summary>
        public async ValueTask StopAsync()
        {
            Task? renewing;
            lock (_gate)
            {
                _stopped = true;
                renewing = _renewing;
            }

            _timer.Dispose();
            if (renewing is null)
            {
                return;
            }

            // Synchronous: the only callback is the renewal's linked store token.
            _stopCts!.Cancel();
            await renewing.ConfigureAwait(false);
            _stopCts.Dispose();
        }

        /// <summary>Stops renewing without waiting for a renewal in progress, which is cancelled and stays silent.</summary>
        public void StopWithoutWaiting()
        {
            CancellationTokenSource? stop;
            lock (_gate)
            {
                _stopped = true;
                stop = _stopCts;
            }

            _timer.Dispose();
            stop?.Cancel();
        }

        private void OnDue()
        {
            lock (_gate)
            {
                if (_stopped)
                {
                    return;
                }

                if (_executor._timeProvider.GetUtcNow() < _executionDeadline)
                {
                    // Started under the gate so that StopAsync either prevents it or sees it and waits for it.
                    _stopCts ??= new CancellationTokenSource();
                    _renewing = RenewAsync(_stopCts.Token);
                    return;
                }
            }

            // The execution timeout. Cancelled outside the gate: the work's callbacks run synchronously here.
            _executionCts.Cancel();
        }

        private bool IsStopped()
        {
            lock (_gate)
            {
                return _stopped;
            }
        }

        private async Task RenewAsync(CancellationToken stop)
        {
            bool renewed;
            try
            {
                renewed = await _executor.CallStoreAsync(
                    static (s, h, ct) => s.RenewAsync(h._storeKey, h._ownerToken, h._policy.Lease, ct),
                    this,
                    _policy,
                    stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return; // The work finished.
            }
            catch (Exception) when (IsStopped())
            {
                return; // The work finished; its own transaction decides ownership.
            }
            catch (Exception ex)
            {
                _executor._metrics.StoreError("renew");
                Log.LeaseLost(_executor._logger, ex, _storeKey);
                await _executionCts.CancelAsync().ConfigureAwait(false);
                return;
            }

            if (!renewed && !IsStopped())
            {
                Log.LeaseLost(_executor._logger, null, _storeKey);
                await _executionCts.CancelAsync().ConfigureAwait(false);
                return;
            }

            if (!renewed)
            {
                return;
            }

            lock (_gate)
            {
                if (!_stopped)
                {
                    var untilDeadline = _executionDeadline - _executor._timeProvider.GetUtcNow();
                    _timer.Change(Min(_interval, untilDeadline > TimeSpan.Zero ? untilDeadline : TimeSpan.Zero), Timeout.InfiniteTimeSpan);
                }
            }
        }
    }

    private async ValueTask TryReleaseAsync(string storeKey, Guid ownerToken, IdempotencyPolicy policy)
    {
        try
        {
            await CallStoreAsync(static (s, a, ct) => s.ReleaseAsync(a.storeKey, a.ownerToken, ct), (storeKey, ownerToken), policy, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsStoreFailure(ex, CancellationToken.None))
        {
            // Not fatal: the lease runs out and the next request takes over.
            _metrics.StoreError("release");
            Log.StoreFailed(_logger, ex, "release", storeKey);
        }
    }

    private async ValueTask<IdempotencyOutcome> OnStoreUnavailableAsync<TState>(
        Exception exception,
        string storeKey,
        IdempotencyPolicy policy,
        TState state,
        Func<IdempotentExecution, TState, ValueTask<StoredResponse>> work,
        Activity? activity)
    {
        if (policy.StoreFailureMode != StoreFailureMode.FailOpen)
        {
            return FailClosed(exception, storeKey, activity);
        }

        _metrics.StoreError("claim");
        Log.StoreFailed(_logger, exception, "claim", storeKey);
        Log.ExecutingUnprotected(_logger, storeKey);
        using var executionCts = new CancellationTokenSource(policy.ExecutionTimeout, _timeProvider);
        var response = await work(new IdempotentExecution(storeKey, Guid.Empty, executionCts.Token), state).ConfigureAwait(false);
        return Finish(activity, IdempotencyOutcomes.Unprotected, new IdempotencyOutcome(IdempotencyOutcomeKind.ExecutedUnprotected, response));
    }

    private IdempotencyOutcome FailClosed(Exception exception, string storeKey, Activity? activity)
    {
        _metrics.StoreError("claim");
        Log.StoreFailed(_logger, exception, "claim", storeKey);
        return Finish(activity, IdempotencyOutcomes.StoreError, new IdempotencyOutcome(IdempotencyOutcomeKind.StoreUnavailable, retryAfter: TimeSpan.FromSeconds(1)));
    }

    private IdempotencyOutcome Finish(Activity? activity, string outcomeTag, IdempotencyOutcome outcome)
    {
        _metrics.CountRequest(outcomeTag);
        activity?.SetTag(IdempotencyMetrics.OutcomeTag, outcomeTag);
        return outcome;
    }

    // Every store call that waits has a deadline: an outage must answer quickly, never hang a request. A call that
    // completes synchronously (the in-memory store, an embedded database) never sees a timer or a registration:
    // both are armed only once the call turns out to be waiting, which keeps them off the hot path.
    private async ValueTask<TResult> CallStoreAsync<TArg, TResult>(
        Func<IIdempotencyStore, TArg, CancellationToken, ValueTask<TResult>> call,
        TArg argument,
        IdempotencyPolicy policy,
        CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();

        // Not disposed on purpose: it never owns a timer, and a timer callback racing with a dispose would throw.
        // A source whose call completed synchronously was never cancelled nor exposed to a timer: the thread keeps it
        // for its next call, so synchronous stores cost no allocation here.
        var deadline = t_idleDeadline ?? new CancellationTokenSource();
        t_idleDeadline = null;
        var pending = call(_store, argument, deadline.Token);
        if (pending.IsCompleted)
        {
            var result = pending.Result;
            if (deadline.TryReset())
            {
                t_idleDeadline = deadline;
            }

            return result;
        }

        using var timer = _timeProvider.CreateTimer(static state => ((CancellationTokenSource)state!).Cancel(), deadline, policy.StoreTimeout, Timeout.InfiniteTimeSpan);
        using var registration = cancellationToken.UnsafeRegister(static state => ((CancellationTokenSource)state!).Cancel(), deadline);

        // A store that honours its token ends at the deadline above. One that does not (a driver stuck on a dead
        // connection, a third-party store) must not take the request down with it: a grace period after the deadline
        // the call is abandoned and counts as a store failure, so the caller gets its 503 and the node stays live.
        return await pending.AsTask().WaitAsync(policy.StoreTimeout + AbandonGrace, _timeProvider, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>One fenced completion under the store deadline; the first attempt and the background retries share it.</summary>
    private ValueTask<bool> StoreCompletionAsync(string storeKey, Guid ownerToken, StoredResponse toStore, IdempotencyPolicy policy) =>
        CallStoreAsync(
            static (s, a, ct) => s.CompleteAsync(a.storeKey, a.ownerToken, a.toStore, a.Retention, ct),
            (storeKey, ownerToken, toStore, policy.Retention),
            policy,
            CancellationToken.None);

    /// <summary>How long a store call may outlive its deadline before it is abandoned (see <see cref="CallStoreAsync"/>).</summary>
    internal static readonly TimeSpan AbandonGrace = TimeSpan.FromSeconds(1);

    private static bool IsStoreFailure(Exception exception, CancellationToken callerToken) =>
        !(exception is OperationCanceledException && callerToken.IsCancellationRequested);

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
