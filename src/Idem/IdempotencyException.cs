namespace Idem;

/// <summary>Thrown by <see cref="IdempotencyExecutor.ExecuteOnceAsync{TResult}"/> when the operation neither ran nor replayed.</summary>
public sealed class IdempotencyException : Exception
{
    /// <summary>Creates the exception for an outcome.</summary>
    public IdempotencyException(IdempotencyOutcome outcome)
        : base(Describe(outcome))
    {
        Outcome = outcome;
    }

    /// <summary>What happened.</summary>
    public IdempotencyOutcome Outcome { get; }

    private static string Describe(IdempotencyOutcome outcome) => outcome?.Kind switch
    {
        IdempotencyOutcomeKind.Conflict => "The key is being processed by another owner; retry later.",
        IdempotencyOutcomeKind.FingerprintMismatch => "The key was already used with different input.",
        IdempotencyOutcomeKind.StoreUnavailable => "The idempotency store is unavailable; nothing was executed.",
        IdempotencyOutcomeKind.Replayed or IdempotencyOutcomeKind.Executed => "The operation completed but its result was too large to retain.",
        _ => "The operation did not complete.",
    };
}
