namespace Idem;

/// <summary>Where a record is in its life.</summary>
public enum IdempotencyRecordState
{
    /// <summary>An owner has claimed the key and is running the operation under a lease.</summary>
    InFlight = 1,

    /// <summary>The operation finished and its response is stored for replay.</summary>
    Completed = 2,
}

/// <summary>What a store holds for one key.</summary>
public sealed class IdempotencyRecord
{
    /// <summary>The store key (a hash; see <see cref="IdempotencyScope"/>).</summary>
    public required string Key { get; init; }

    /// <summary>The state.</summary>
    public required IdempotencyRecordState State { get; init; }

    /// <summary>The fingerprint of the request that claimed the key.</summary>
    public required string Fingerprint { get; init; }

    /// <summary>The token of the owner that holds (or held) the claim; completion and renewal are fenced by it.</summary>
    public required Guid OwnerToken { get; init; }

    /// <summary>When the owner's lease ends, by the store's clock. Meaningful while <see cref="State"/> is in flight.</summary>
    public required DateTimeOffset LeaseExpiresAt { get; init; }

    /// <summary>When the record may be purged, by the store's clock.</summary>
    public required DateTimeOffset ExpiresAt { get; init; }

    /// <summary>The stored response, once completed.</summary>
    public StoredResponse? Response { get; init; }

    /// <summary>
    /// The recovery points recorded by the owners of this key (see <see cref="IRecoveryPointStore"/>), in the executor's
    /// encoding; empty when none.
    /// </summary>
    public ReadOnlyMemory<byte> Phases { get; init; }

    /// <summary>
    /// Who claimed the key and for which operation, as the claim passed it (<see cref="ClaimRequest.Metadata"/>);
    /// <see langword="null"/> for records written before the store kept it, by callers that passed none, or by stores
    /// that do not keep it.
    /// </summary>
    public IdempotencyRecordMetadata? Metadata { get; init; }
}
