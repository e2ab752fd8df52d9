namespace Idem;

/// <summary>
/// An optional capability of a store, beside <see cref="IIdempotencyStore"/>: inspecting and administering its records
/// and schema, for operators' tools (<c>idem keys</c>, <c>idem doctor</c>, <c>idem migrate</c>) and health checks.
/// Never used on the request path. Every store in this repository implements it; test for it with a type check.
/// </summary>
public interface IIdempotencyStoreAdmin
{
    /// <summary>Lists the records that match <paramref name="query"/> (ordered by store key where the store can sort), at most <see cref="IdempotencyRecordQuery.Limit"/>.</summary>
    /// <param name="query">What to list.</param>
    /// <param name="cancellationToken">Cancels the listing.</param>
    /// <returns>The records, with their stored responses.</returns>
    IAsyncEnumerable<IdempotencyRecord> ListAsync(IdempotencyRecordQuery query, CancellationToken cancellationToken);

    /// <summary>
    /// Deletes the record of <paramref name="key"/> whatever its state and owner (an in-flight owner is then fenced:
    /// its completion is refused). The next request with the key runs again.
    /// </summary>
    /// <param name="key">The store key.</param>
    /// <param name="cancellationToken">Cancels the deletion.</param>
    /// <returns><see langword="false"/> when there was no record.</returns>
    ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken);

    /// <summary>
    /// Describes the store without changing anything: its clock, its schema version against the one this release
    /// expects, and the server settings that decide whether records survive (for example Redis's eviction policy).
    /// </summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    ValueTask<IdempotencyStoreDescription> DescribeAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Creates or upgrades the store's schema with the store's own migrator. Idempotent: a second call applies nothing.
    /// A store without a schema (Redis) applies nothing and says so.
    /// </summary>
    /// <param name="cancellationToken">Cancels the migration (it then rolls back).</param>
    ValueTask<IdempotencySchemaMigration> MigrateAsync(CancellationToken cancellationToken);
}

/// <summary>Which records <see cref="IIdempotencyStoreAdmin.ListAsync"/> returns.</summary>
public sealed class IdempotencyRecordQuery
{
    /// <summary>Only records in this state; any state when <see langword="null"/>.</summary>
    /// <value>Default: <see langword="null"/>.</value>
    public IdempotencyRecordState? State { get; init; }

    /// <summary>
    /// <see langword="false"/>: only live records; <see langword="true"/>: only records past retention that are not
    /// purged yet; <see langword="null"/>: both. Judged by the store's clock.
    /// </summary>
    /// <value>Default: <see langword="false"/>.</value>
    public bool? Expired { get; init; } = false;

    /// <summary>Only records whose retention ends before this instant.</summary>
    /// <value>Default: <see langword="null"/> (no bound).</value>
    public DateTimeOffset? ExpiresBefore { get; init; }

    /// <summary>Only records whose retention ends after this instant.</summary>
    /// <value>Default: <see langword="null"/> (no bound).</value>
    public DateTimeOffset? ExpiresAfter { get; init; }

    /// <summary>
    /// Only records claimed by the principal with this hash (<see cref="IdempotencyRecordMetadata.PrincipalHash"/>, see
    /// <see cref="IdempotencyScope.ComputePrincipalHash"/>). Records without metadata never match.
    /// </summary>
    /// <value>Default: <see langword="null"/> (any principal).</value>
    public string? PrincipalHash { get; init; }

    /// <summary>
    /// Only records of this operation (<see cref="IdempotencyRecordMetadata.Operation"/>): it matches an operation equal to
    /// it, or a method, a space and it (<c>/orders</c> matches <c>POST /orders</c> and <c>PUT /orders</c>;
    /// <c>POST /orders</c> matches only that). Records without metadata never match.
    /// </summary>
    /// <value>Default: <see langword="null"/> (any operation).</value>
    public string? Route { get; init; }

    /// <summary>Whether <paramref name="metadata"/> passes the <see cref="PrincipalHash"/> and <see cref="Route"/> filters; for stores that filter in memory.</summary>
    /// <param name="metadata">The record's metadata; <see langword="null"/> when unknown.</param>
    /// <returns><see langword="true"/> when both filters are off or both match.</returns>
    public bool MatchesMetadata(IdempotencyRecordMetadata? metadata)
    {
        if (PrincipalHash is { } principalHash && !string.Equals(metadata?.PrincipalHash, principalHash, StringComparison.Ordinal))
        {
            return false;
        }

        if (Route is { } route)
        {
            var operation = metadata?.Operation;
            return operation is not null
                && (string.Equals(operation, route, StringComparison.Ordinal)
                    || (operation.Length > route.Length && operation.EndsWith(route, StringComparison.Ordinal) && operation[operation.Length - route.Length - 1] == ' '));
        }

        return true;
    }

    /// <summary>Only records whose store key starts with this text (store keys are lowercase hexadecimal).</summary>
    /// <value>Default: <see langword="null"/> (any key).</value>
    public string? KeyPrefix { get; init; }

    /// <summary>The most records returned.</summary>
    /// <value>Default: 100. Range: 1 to 100,000.</value>
    public int Limit { get; init; } = 100;

    /// <summary>Throws when the query cannot be run.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><see cref="Limit"/> is out of range.</exception>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Limit, 1, nameof(Limit));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(Limit, 100_000, nameof(Limit));
    }
}

/// <summary>What <see cref="IIdempotencyStoreAdmin.DescribeAsync"/> found.</summary>
public sealed class IdempotencyStoreDescription
{
    /// <summary>The kind of store, for example <c>sqlite</c>, <c>postgresql</c>, <c>redis</c>.</summary>
    public required string Kind { get; init; }

    /// <summary>The store's clock when it answered (leases and retention are judged by it).</summary>
    public required DateTimeOffset StoreTime { get; init; }

    /// <summary>The schema version found; 0 when there is no schema yet; <see langword="null"/> for stores without a schema.</summary>
    public int? SchemaVersion { get; init; }

    /// <summary>The schema version this release creates; <see langword="null"/> for stores without a schema.</summary>
    public int? LatestSchemaVersion { get; init; }

    /// <summary>Server settings that matter to operators (for example <c>maxmemory-policy</c>, <c>journal_mode</c>), by name.</summary>
    public IReadOnlyDictionary<string, string> Settings { get; init; } = new Dictionary<string, string>();
}

/// <summary>What <see cref="IIdempotencyStoreAdmin.MigrateAsync"/> did.</summary>
/// <param name="VersionBefore">The schema version before; 0 when there was none; <see langword="null"/> for stores without a schema.</param>
/// <param name="VersionAfter">The schema version after; <see langword="null"/> for stores without a schema.</param>
/// <param name="Applied">One line per migration applied, in order; empty when the schema was current.</param>
public sealed record IdempotencySchemaMigration(int? VersionBefore, int? VersionAfter, IReadOnlyList<string> Applied);
