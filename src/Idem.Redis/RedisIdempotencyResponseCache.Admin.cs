namespace Idem.Redis;

/// <summary>
/// Administration of the cached copies, so <see cref="TieredIdempotencyStore.DeleteAsync"/> can drop a purged key's
/// cached response, and <c>idem doctor</c> can read the cache server's settings.
/// </summary>
public sealed partial class RedisIdempotencyResponseCache : IIdempotencyStoreAdmin
{
    /// <inheritdoc />
    /// <remarks>Scans the primaries for <c>&lt;prefix&gt;{…}</c> keys (SCAN, never KEYS); the order is Redis's, not sorted.</remarks>
    public IAsyncEnumerable<IdempotencyRecord> ListAsync(IdempotencyRecordQuery query, CancellationToken cancellationToken) =>
        RedisAdmin.ListAsync(_connection, _prefix, query, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        return await RedisAdmin.DeleteAsync(_connection, RedisKeyFor(key), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public ValueTask<IdempotencyStoreDescription> DescribeAsync(CancellationToken cancellationToken) =>
        RedisAdmin.DescribeAsync(_connection, "redis-cache", _prefix, cancellationToken);

    /// <inheritdoc />
    /// <remarks>Redis has no schema: nothing to apply.</remarks>
    public ValueTask<IdempotencySchemaMigration> MigrateAsync(CancellationToken cancellationToken) => ValueTask.FromResult(RedisAdmin.NoSchema);
}
