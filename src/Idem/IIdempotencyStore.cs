namespace Idem;

/// <summary>
/// Durable state for idempotency keys. Every member is one atomic step (one round trip for a remote store).
/// Implementations must pass the conformance suite in <c>Idem.Stores.Tests</c>.
/// </summary>
/// <remarks>
/// Leases and retention are judged by the store's clock. Failures surface as exceptions; the executor
/// turns them into a fail-closed answer (or an explicitly configured, counted fail-open).
/// </remarks>
public interface IIdempotencyStore
{
    /// <summary>
    /// Atomically claims <see cref="ClaimRequest.Key"/>: creates an in-flight record when there is none (or only an
    /// expired one), takes over an in-flight record whose lease expired when the fingerprints match, and otherwise
    /// reports what is there (the caller compares fingerprints).
    /// </summary>
    ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken);

    /// <summary>
    /// Stores the response and marks the record completed, only while <paramref name="ownerToken"/> still owns it.
    /// </summary>
    /// <returns><see langword="false"/> when the owner lost the claim (fenced); nothing is written then.</returns>
    /// <remarks>
    /// The response's memory belongs to the caller and may be a pooled buffer that is reused as soon as the returned
    /// task completes: copy what is kept, and never read it later (for example from a write left in a queue after a
    /// timeout or from a background cache update).
    /// </remarks>
    ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken);

    /// <summary>Deletes the in-flight record owned by <paramref name="ownerToken"/>, so the next request runs again.</summary>
    /// <returns><see langword="false"/> when the owner no longer owns it.</returns>
    ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken);

    /// <summary>Extends the owner's lease to <paramref name="lease"/> from now.</summary>
    /// <returns><see langword="false"/> when the owner no longer owns an in-flight record (fenced).</returns>
    ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken);

    /// <summary>Reads the record, or <see langword="null"/> when there is none or it is past retention.</summary>
    ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken);

    /// <summary>Deletes up to <paramref name="maxRecords"/> records past retention.</summary>
    /// <returns>How many were deleted; fewer than <paramref name="maxRecords"/> means none are left.</returns>
    ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken);

    /// <summary>
    /// Waits until the record for <paramref name="key"/> is no longer the in-flight claim of
    /// <paramref name="observedOwner"/> (completed, released or taken over), or until <paramref name="timeout"/>.
    /// Implementations register for the store's notification before checking the record again, so a change made
    /// between the caller's read and this call is never missed. Returning early is allowed; the caller re-checks.
    /// </summary>
    ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken);
}

/// <summary>A request to claim a key.</summary>
/// <param name="Key">The store key.</param>
/// <param name="Fingerprint">The fingerprint of the request.</param>
/// <param name="OwnerToken">The token the new owner will hold.</param>
/// <param name="Lease">How long the claim holds without renewal.</param>
/// <param name="Retention">How long an in-flight record is kept at most (completion resets it).</param>
public readonly record struct ClaimRequest(string Key, string Fingerprint, Guid OwnerToken, TimeSpan Lease, TimeSpan Retention)
{
    /// <summary>
    /// Who claims and for which operation, for operators (<see cref="IIdempotencyStoreAdmin.ListAsync"/> filters by it).
    /// A store may persist it with the record it creates and return it in <see cref="IdempotencyRecord.Metadata"/>, or
    /// ignore it; it never changes what the claim does.
    /// </summary>
    /// <value>Default: <see langword="null"/> (unknown).</value>
    public IdempotencyRecordMetadata? Metadata { get; init; }
}

/// <summary>What a claim found.</summary>
public enum ClaimStatus
{
    /// <summary>The caller now owns the key and must complete or release it.</summary>
    Claimed = 1,

    /// <summary>Another request completed the key; <see cref="ClaimResult.Record"/> holds the response.</summary>
    Completed = 2,

    /// <summary>Another owner holds a live lease on the key.</summary>
    InFlight = 3,
}

/// <summary>The answer to <see cref="IIdempotencyStore.TryClaimAsync"/>.</summary>
/// <param name="Status">What the claim found.</param>
/// <param name="Record">The record as it stands after the claim; for <see cref="ClaimStatus.Claimed"/> it may be <see langword="null"/>.</param>
/// <param name="TookOver"><see langword="true"/> when the claim took over an in-flight record whose lease had expired.</param>
public readonly record struct ClaimResult(ClaimStatus Status, IdempotencyRecord? Record, bool TookOver = false)
{
    /// <summary>A fresh claim.</summary>
    public static ClaimResult NewClaim { get; } = new(ClaimStatus.Claimed, null);
}
