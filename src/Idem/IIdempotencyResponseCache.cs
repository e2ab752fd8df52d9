namespace Idem;

/// <summary>
/// A fast cache of completed records in front of a durable <see cref="IIdempotencyStore"/>, used by
/// <see cref="TieredIdempotencyStore"/>. It holds only completed records, which never change until they expire, so a
/// hit is always a correct replay and a miss or a failure only costs a trip to the durable store.
/// </summary>
public interface IIdempotencyResponseCache
{
    /// <summary>Returns the completed record of <paramref name="key"/>, or <see langword="null"/> when the cache has none.</summary>
    ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken);

    /// <summary>
    /// Keeps <paramref name="completed"/> (a record in the <see cref="IdempotencyRecordState.Completed"/> state) until its
    /// <see cref="IdempotencyRecord.ExpiresAt"/>; an entry already past it is not kept.
    /// </summary>
    /// <remarks>
    /// The response's body may be a pooled buffer the caller reuses once the call returns or is given up on at the
    /// cache deadline: copy it before the first <see langword="await"/>.
    /// </remarks>
    ValueTask SetAsync(IdempotencyRecord completed, CancellationToken cancellationToken);
}
