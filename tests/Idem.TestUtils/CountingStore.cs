namespace Idem.TestUtils;

/// <summary>Wraps a store and counts calls per operation, to prove round-trip budgets.</summary>
public sealed class CountingStore(IIdempotencyStore inner) : IIdempotencyStore
{
    private int _claims, _completes, _releases, _renews, _gets, _purges, _waits;

    public int Claims => Volatile.Read(ref _claims);
    public int Completes => Volatile.Read(ref _completes);
    public int Releases => Volatile.Read(ref _releases);
    public int Renews => Volatile.Read(ref _renews);
    public int Gets => Volatile.Read(ref _gets);
    public int Waits => Volatile.Read(ref _waits);

    /// <summary>Every call that reads or writes a record (waits excluded: they are not on the request's path).</summary>
    public int Total => Claims + Completes + Releases + Renews + Gets;

    /// <summary>When set, every call throws this (a simulated outage).</summary>
    public Exception? FailWith { get; set; }

    public void Reset()
    {
        _claims = _completes = _releases = _renews = _gets = _purges = _waits = 0;
        ClaimMetadata.Clear();
    }

    /// <summary>Every claim's metadata, in order (what the caller passed with the claim).</summary>
    public System.Collections.Concurrent.ConcurrentQueue<IdempotencyRecordMetadata?> ClaimMetadata { get; } = new();

    public ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _claims);
        ClaimMetadata.Enqueue(request.Metadata);
        ThrowIfFailing();
        return inner.TryClaimAsync(request, cancellationToken);
    }

    public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _completes);
        ThrowIfFailing();
        return inner.CompleteAsync(key, ownerToken, response, retention, cancellationToken);
    }

    public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _releases);
        ThrowIfFailing();
        return inner.ReleaseAsync(key, ownerToken, cancellationToken);
    }

    public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _renews);
        ThrowIfFailing();
        return inner.RenewAsync(key, ownerToken, lease, cancellationToken);
    }

    public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _gets);
        ThrowIfFailing();
        return inner.GetAsync(key, cancellationToken);
    }

    public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _purges);
        ThrowIfFailing();
        return inner.PurgeExpiredAsync(maxRecords, cancellationToken);
    }

    public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _waits);
        ThrowIfFailing();
        return inner.WaitForChangeAsync(key, observedOwner, timeout, cancellationToken);
    }

    private void ThrowIfFailing()
    {
        if (FailWith is { } failure)
        {
            throw failure;
        }
    }
}
