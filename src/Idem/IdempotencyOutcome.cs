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

/// <summary>What the operation is given while it runs under a claim.</summary>
public sealed class IdempotentExecution
{
    internal IdempotentExecution(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        Key = key;
        OwnerToken = ownerToken;
        CancellationToken = cancellationToken;
    }

    /// <summary>The store key being executed.</summary>
    public string Key { get; }

    /// <summary>
    /// The owner's fencing token: a handler that writes elsewhere can record it and refuse writes from an older owner.
    /// <see cref="Guid.Empty"/> when running unprotected (fail-open).
    /// </summary>
    public Guid OwnerToken { get; }

    /// <summary>Fires on the execution timeout or when the lease is lost; never because a caller went away.</summary>
    public CancellationToken CancellationToken { get; }
}
