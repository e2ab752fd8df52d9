namespace Idem;

/// <summary>How a request ended.</summary>
public enum IdempotencyOutcomeKind
{
    /// <summary>This caller ran the operation (its response may or may not have been stored).</summary>
    Executed = 1,

    /// <summary>The stored response of an earlier execution is returned.</summary>
    Replayed = 2,

    /// <summary>Another owner holds the key (rejected at once, or the wait timed out): answer 409 with Retry-After.</summary>
    Conflict = 3,

    /// <summary>The key was used with another request fingerprint: answer 422.</summary>
    FingerprintMismatch = 4,

    /// <summary>The store could not answer and the policy fails closed: answer 503 with Retry-After.</summary>
    StoreUnavailable = 5,

    /// <summary>The store could not answer and the policy fails open: the operation ran unprotected.</summary>
    ExecutedUnprotected = 6,
}

/// <summary>The result of <see cref="IdempotencyExecutor.ExecuteAsync"/>.</summary>
public sealed class IdempotencyOutcome
{
    internal IdempotencyOutcome(IdempotencyOutcomeKind kind, StoredResponse? response = null, TimeSpan? retryAfter = null)
    {
        Kind = kind;
        Response = response;
        RetryAfter = retryAfter;
    }

    /// <summary>How the request ended.</summary>
    public IdempotencyOutcomeKind Kind { get; }

    /// <summary>The response: the one just produced (executed) or the stored one (replayed); otherwise <see langword="null"/>.</summary>
    public StoredResponse? Response { get; }

    /// <summary>For conflicts and store failures: when the caller should retry.</summary>
    public TimeSpan? RetryAfter { get; }

    /// <summary>For executed outcomes: whether the response was stored for replay.</summary>
    public bool Stored { get; init; }

    /// <summary>For replays: whether this caller waited for an in-flight owner first.</summary>
    public bool Waited { get; init; }

    /// <summary>For executed outcomes: whether the claim took over an expired lease of a crashed owner.</summary>
    public bool TookOver { get; init; }
}
