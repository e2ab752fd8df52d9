namespace Idem;

/// <summary>
/// Who claimed a key and for which operation, kept beside the record so operators can find records by principal and
/// route (<c>idem keys list --principal-hash --route</c>). Written at claim time by stores that persist it (SQLite,
/// PostgreSQL, Redis; the in-memory store does not). Never part of the store key, never a metric tag, never the raw
/// principal: only its hash (<see cref="IdempotencyScope.ComputePrincipalHash"/>).
/// </summary>
/// <remarks>
/// Records written before a store kept metadata (or by callers that pass none) have <see langword="null"/> metadata;
/// they replay as before and match no principal or route filter.
/// </remarks>
public sealed class IdempotencyRecordMetadata
{
    /// <summary>The hash of the principal that claimed the key (see <see cref="IdempotencyScope.ComputePrincipalHash"/>); <see langword="null"/> when unknown.</summary>
    public string? PrincipalHash { get; init; }

    /// <summary>The operation the key applies to, for example <c>POST /orders/{id}</c> (method and route template) or a worker's scope; <see langword="null"/> when unknown.</summary>
    public string? Operation { get; init; }

    /// <summary>The metadata of a claim by <paramref name="principal"/> for <paramref name="operation"/>: the principal is hashed here.</summary>
    /// <param name="principal">Who sent the request; an empty string for anonymous callers.</param>
    /// <param name="operation">What the key applies to, as passed to <see cref="IdempotencyScope.ComputeStoreKey"/>.</param>
    /// <returns>The metadata to pass with the claim.</returns>
    public static IdempotencyRecordMetadata Create(string principal, string operation)
    {
        ArgumentNullException.ThrowIfNull(operation);
        return new IdempotencyRecordMetadata { PrincipalHash = IdempotencyScope.ComputePrincipalHash(principal), Operation = operation };
    }
}
