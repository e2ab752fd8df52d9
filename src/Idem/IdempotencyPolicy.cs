namespace Idem;

/// <summary>What to do when a key is already in flight under another owner's live lease.</summary>
public enum ConflictBehavior
{
    /// <summary>Wait for the owner to finish (woken by the store), then replay; 409 with Retry-After after <see cref="IdempotencyPolicy.WaitTimeout"/>.</summary>
    Wait = 0,

    /// <summary>Answer 409 with Retry-After at once.</summary>
    Reject = 1,
}

/// <summary>What to do when the store cannot answer.</summary>
public enum StoreFailureMode
{
    /// <summary>Refuse the request (503 with Retry-After). The default: a duplicate is worse than a retry.</summary>
    FailClosed = 0,

    /// <summary>Run the operation unprotected; every such request is counted (<c>unprotected</c>) and logged.</summary>
    FailOpen = 1,
}

/// <summary>How one operation (an endpoint, a job type) is protected. Instances are immutable once in use; copy with <c>with</c>.</summary>
public sealed record IdempotencyPolicy
{
    /// <summary>The policy used where nothing else is configured.</summary>
    public static IdempotencyPolicy Default { get; } = new();

    /// <summary>How long a completed response is kept for replay.</summary>
    /// <value>24 hours. Must be positive.</value>
    public TimeSpan Retention { get; init; } = TimeSpan.FromHours(24);

    /// <summary>How long a claim holds without renewal; the owner renews it every third of it while it works.</summary>
    /// <value>10 seconds. At least 1 second. A crashed owner's key is free again after at most this long.</value>
    public TimeSpan Lease { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>What a request does when the key is in flight elsewhere.</summary>
    /// <value><see cref="ConflictBehavior.Wait"/>.</value>
    public ConflictBehavior ConflictBehavior { get; init; } = ConflictBehavior.Wait;

    /// <summary>How long a waiting request waits before it answers 409.</summary>
    /// <value>30 seconds.</value>
    public TimeSpan WaitTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long the operation may run. It keeps running when its caller goes away (that is when a retry needs
    /// its result most); only this timeout, or a lost lease, cancels it.
    /// </summary>
    /// <value>100 seconds.</value>
    public TimeSpan ExecutionTimeout { get; init; } = TimeSpan.FromSeconds(100);

    /// <summary>
    /// The deadline of each store call that waits; past it the store counts as unavailable. A store call that completes
    /// synchronously (an embedded database) is bounded by the store's own timeout instead, such as SQLite's busy timeout.
    /// The call's cancellation token is cancelled at the deadline; a call that ignores it is abandoned one second later.
    /// </summary>
    /// <value>5 seconds.</value>
    public TimeSpan StoreTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>What to do when the store cannot answer.</summary>
    /// <value><see cref="StoreFailureMode.FailClosed"/>.</value>
    public StoreFailureMode StoreFailureMode { get; init; } = StoreFailureMode.FailClosed;

    /// <summary>The largest response body stored; a larger successful response is recorded as done without its body.</summary>
    /// <value>1 MiB.</value>
    public int MaxStoredBodyBytes { get; init; } = 1024 * 1024;

    /// <summary>
    /// Decides whether a response is stored (replayed to retries) or released (a retry runs again).
    /// </summary>
    /// <value>Status below 500, except 408 and 429.</value>
    public Func<int, bool> ShouldStore { get; init; } = DefaultShouldStore;

    /// <summary>
    /// Runs the operation in a <em>joined transaction</em>: its database writes and the completion of its key commit in one
    /// transaction on the store's database, fenced by the owner's token, and the response is released only after that
    /// commit. Needs a store that implements <see cref="ITransactionalIdempotencyStore"/> (SQLite, PostgreSQL) and business
    /// data in the same database; the operation writes through <see cref="IdempotentExecution.GetTransactionAsync(CancellationToken)"/>.
    /// </summary>
    /// <value><see langword="false"/>: the completion is a separate commit after the operation's own.</value>
    public bool JoinedTransaction { get; init; }

    /// <summary>The default <see cref="ShouldStore"/>: below 500, except 408 and 429.</summary>
    public static bool DefaultShouldStore(int statusCode) => statusCode < 500 && statusCode != 408 && statusCode != 429;

    /// <summary>Throws when a value is out of range; called when a policy is registered.</summary>
    public void Validate()
    {
        ThrowIfNotPositive(Retention, nameof(Retention));
        if (Lease < TimeSpan.FromSeconds(1))
        {
            throw new ArgumentOutOfRangeException(nameof(Lease), Lease, "The lease must be at least 1 second.");
        }

        if (WaitTimeout < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(WaitTimeout), WaitTimeout, "The wait timeout must not be negative.");
        }

        ThrowIfNotPositive(ExecutionTimeout, nameof(ExecutionTimeout));
        ThrowIfNotPositive(StoreTimeout, nameof(StoreTimeout));
        ArgumentOutOfRangeException.ThrowIfNegative(MaxStoredBodyBytes);
        ArgumentNullException.ThrowIfNull(ShouldStore);
        if (!Enum.IsDefined(ConflictBehavior))
        {
            throw new ArgumentOutOfRangeException(nameof(ConflictBehavior), ConflictBehavior, "Unknown conflict behaviour.");
        }

        if (!Enum.IsDefined(StoreFailureMode))
        {
            throw new ArgumentOutOfRangeException(nameof(StoreFailureMode), StoreFailureMode, "Unknown store failure mode.");
        }

        if (JoinedTransaction && StoreFailureMode == StoreFailureMode.FailOpen)
        {
            // The store and the data share one database: when the store cannot answer, neither can the data, and an
            // unprotected run would have no transaction to join.
            throw new ArgumentException("A joined transaction cannot fail open: the store and the business data share one database.", nameof(StoreFailureMode));
        }
    }

    private static void ThrowIfNotPositive(TimeSpan value, string name)
    {
        if (value <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive.");
        }
    }
}
