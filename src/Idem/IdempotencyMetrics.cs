using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Idem;

/// <summary>
/// The <c>Idem</c> meter: <c>idem.requests</c> counted by outcome, <c>idem.store.errors</c> by operation, the
/// durations of claims and replays, <c>idem.replays.not_retained</c>, <c>idem.replay_cache.hits</c> for a node's local
/// replay cache, and for the tiered store <c>idem.cache.hits</c>, <c>idem.cache.errors</c> by operation and the
/// <c>idem.cache.fallback</c> gauge. Keys never become tags. The alert rules
/// and dashboard in <c>deploy/</c> use these names (as Prometheus exports them: <c>idem_requests_total</c>, …).
/// </summary>
public sealed class IdempotencyMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Idem";

    /// <summary>The outcome tag's name on <c>idem.requests</c>.</summary>
    public const string OutcomeTag = "idem.outcome";

    private readonly Counter<long> _requests;
    private readonly Counter<long> _storeErrors;
    private readonly Histogram<double> _claimDuration;
    private readonly Histogram<double> _replayDuration;
    private readonly Counter<long> _cacheHits;
    private readonly Counter<long> _cacheErrors;
    private readonly Counter<long> _replayCacheHits;
    private readonly Gauge<int> _cacheFallback;
    private readonly Counter<long> _notRetained;

    // Store round trips take from well under a millisecond (in memory, SQLite) to seconds (an outage up to the deadline);
    // the SDKs' default boundaries (0 to 10 000, meant for milliseconds) would put all of them in the first bucket.
    private static readonly InstrumentAdvice<double> DurationAdvice = new()
    {
        HistogramBucketBoundaries = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    };
    private readonly Counter<long> _staleRollbacks;
    private readonly Counter<long> _phases;
    private readonly Counter<long> _completionRetries;

    /// <summary>Creates the instruments on a meter from <paramref name="meterFactory"/>.</summary>
    public IdempotencyMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        var meter = meterFactory.Create(MeterName);
        _requests = meter.CreateCounter<long>(
            "idem.requests",
            unit: "{request}",
            description: "Requests under idempotency protection, by outcome: executed, replayed, waited, conflicted, mismatched, rejected, store_error, unprotected, no_key.");
        _storeErrors = meter.CreateCounter<long>(
            "idem.store.errors",
            unit: "{error}",
            description: "Store calls that failed or missed their deadline, by operation.");
        _claimDuration = meter.CreateHistogram<double>(
            "idem.claim.duration",
            unit: "s",
            description: "Time to claim a key in the store.",
            tags: null,
            advice: DurationAdvice);
        _replayDuration = meter.CreateHistogram<double>(
            "idem.replay.duration",
            unit: "s",
            description: "Time from the start of a replayed request to its stored response being found.",
            tags: null,
            advice: DurationAdvice);
        _cacheHits = meter.CreateCounter<long>(
            "idem.cache.hits",
            unit: "{hit}",
            description: "Claims the tiered store answered from its response cache alone.");
        _cacheErrors = meter.CreateCounter<long>(
            "idem.cache.errors",
            unit: "{error}",
            description: "Response-cache calls of the tiered store that failed or missed their deadline, by operation (get, set); each was served by the durable store.");
        _replayCacheHits = meter.CreateCounter<long>(
            "idem.replay_cache.hits",
            unit: "{hit}",
            description: "Claims answered from a node's local replay cache (WithLocalReplayCache) without a store round trip.");
        _cacheFallback = meter.CreateGauge<int>(
            "idem.cache.fallback",
            unit: "{state}",
            description: "1 while a tiered store serves without its response cache (from a failed cache call to the next one that succeeds), 0 otherwise.");
        _notRetained = meter.CreateCounter<long>(
            "idem.replays.not_retained",
            unit: "{replay}",
            description: "Replays of a request whose response was larger than the stored-body limit: answered 409 'not retained' (the request is never run again).");
        _staleRollbacks = meter.CreateCounter<long>(
            "idem.stale_owner.rollbacks",
            unit: "{rollback}",
            description: "Owners that lost their key to a newer owner while they worked and whose writes were rolled back (joined transaction or recovery point).");
        _phases = meter.CreateCounter<long>(
            "idem.phases",
            unit: "{phase}",
            description: "Recovery points, by outcome: recorded (the phase ran and was recorded), resumed (a takeover skipped a phase an earlier owner finished).");
        _completionRetries = meter.CreateCounter<long>(
            "idem.completion.retries",
            unit: "{completion}",
            description: "Completions the store could not take at first and that were tried again, by outcome: stored, fenced (a newer owner took the key), abandoned (attempts or one lease used up; the key stays claimed until its lease runs out).");
    }

    /// <summary>Counts one request with the given outcome, one of a closed set (the executor counts its own outcomes).</summary>
    /// <param name="outcome">The outcome; its tag value is the matching <see cref="IdempotencyOutcomes"/> constant.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="outcome"/> is not a defined value.</exception>
    public void Request(IdempotencyRequestOutcome outcome) => CountRequest(outcome switch
    {
        IdempotencyRequestOutcome.Executed => IdempotencyOutcomes.Executed,
        IdempotencyRequestOutcome.Replayed => IdempotencyOutcomes.Replayed,
        IdempotencyRequestOutcome.Waited => IdempotencyOutcomes.Waited,
        IdempotencyRequestOutcome.Conflicted => IdempotencyOutcomes.Conflicted,
        IdempotencyRequestOutcome.Mismatched => IdempotencyOutcomes.Mismatched,
        IdempotencyRequestOutcome.Rejected => IdempotencyOutcomes.Rejected,
        IdempotencyRequestOutcome.StoreError => IdempotencyOutcomes.StoreError,
        IdempotencyRequestOutcome.Unprotected => IdempotencyOutcomes.Unprotected,
        IdempotencyRequestOutcome.NoKey => IdempotencyOutcomes.NoKey,
        _ => throw new ArgumentOutOfRangeException(nameof(outcome), outcome, "Unknown request outcome."),
    });

    // Only ever called with an IdempotencyOutcomes constant, so the tag stays bounded.
    internal void CountRequest(string outcome)
    {
        if (_requests.Enabled)
        {
            _requests.Add(1, new KeyValuePair<string, object?>(OutcomeTag, outcome));
        }
    }

    internal void StoreError(string operation) => CountOperation(_storeErrors, operation);

    internal void StaleOwnerRolledBack()
    {
        if (_staleRollbacks.Enabled)
        {
            _staleRollbacks.Add(1);
        }
    }

    internal void CompletionRetried(string outcome)
    {
        if (_completionRetries.Enabled)
        {
            _completionRetries.Add(1, new KeyValuePair<string, object?>(OutcomeTag, outcome));
        }
    }

    internal void Phase(string outcome)
    {
        if (_phases.Enabled)
        {
            _phases.Add(1, new KeyValuePair<string, object?>(OutcomeTag, outcome));
        }
    }

    internal void CacheHit()
    {
        if (_cacheHits.Enabled)
        {
            _cacheHits.Add(1);
        }
    }

    internal void ReplayCacheHit()
    {
        if (_replayCacheHits.Enabled)
        {
            _replayCacheHits.Add(1);
        }
    }

    internal void CacheError(string operation) => CountOperation(_cacheErrors, operation);

    internal void CacheFallback(bool active) => _cacheFallback.Record(active ? 1 : 0);

    internal void ReplayNotRetained()
    {
        if (_notRetained.Enabled)
        {
            _notRetained.Add(1);
        }
    }

    private static void CountOperation(Counter<long> counter, string operation)
    {
        if (counter.Enabled)
        {
            counter.Add(1, new KeyValuePair<string, object?>("idem.operation", operation));
        }
    }

    internal void ClaimDuration(long startTimestamp)
    {
        if (_claimDuration.Enabled)
        {
            _claimDuration.Record(Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds);
        }
    }

    internal void ReplayDuration(long startTimestamp)
    {
        if (_replayDuration.Enabled)
        {
            _replayDuration.Record(Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds);
        }
    }
}

/// <summary>The outcome of one request under protection, as counted by <see cref="IdempotencyMetrics.Request"/>.</summary>
public enum IdempotencyRequestOutcome
{
    /// <summary>The operation ran and its outcome was settled (<c>executed</c>).</summary>
    Executed,

    /// <summary>A stored response was replayed (<c>replayed</c>).</summary>
    Replayed,

    /// <summary>A stored response was replayed after waiting for an in-flight owner (<c>waited</c>).</summary>
    Waited,

    /// <summary>Answered 409 because the key was in flight (<c>conflicted</c>).</summary>
    Conflicted,

    /// <summary>Answered 422 because the fingerprint differed (<c>mismatched</c>).</summary>
    Mismatched,

    /// <summary>Answered 400/413 for an invalid, missing-when-required or oversized request (<c>rejected</c>).</summary>
    Rejected,

    /// <summary>Answered 503 because the store could not answer (<c>store_error</c>).</summary>
    StoreError,

    /// <summary>Ran without protection because the store could not answer and the policy fails open (<c>unprotected</c>).</summary>
    Unprotected,

    /// <summary>Passed through because no key was sent and none is required (<c>no_key</c>).</summary>
    NoKey,
}

/// <summary>The bounded set of values of <see cref="IdempotencyMetrics.OutcomeTag"/>, one per <see cref="IdempotencyRequestOutcome"/>.</summary>
public static class IdempotencyOutcomes
{
    /// <summary>The operation ran and its outcome was settled.</summary>
    public const string Executed = "executed";

    /// <summary>A stored response was replayed.</summary>
    public const string Replayed = "replayed";

    /// <summary>A stored response was replayed after waiting for an in-flight owner.</summary>
    public const string Waited = "waited";

    /// <summary>Answered 409 because the key was in flight.</summary>
    public const string Conflicted = "conflicted";

    /// <summary>Answered 422 because the fingerprint differed.</summary>
    public const string Mismatched = "mismatched";

    /// <summary>Answered 400/413 for an invalid, missing-when-required or oversized request.</summary>
    public const string Rejected = "rejected";

    /// <summary>Answered 503 because the store could not answer.</summary>
    public const string StoreError = "store_error";

    /// <summary>Ran without protection because the store could not answer and the policy fails open.</summary>
    public const string Unprotected = "unprotected";

    /// <summary>Passed through because no key was sent and none is required.</summary>
    public const string NoKey = "no_key";
}
