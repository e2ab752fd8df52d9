namespace Idem.Redis;

/// <summary>Administration (<c>idem keys</c>, <c>idem doctor</c>): the same hashes, read and deleted by key.</summary>
public sealed partial class RedisIdempotencyStore : IIdempotencyStoreAdmin
{
    /// <inheritdoc />
    /// <remarks>Scans the primaries for <c>&lt;prefix&gt;{…}</c> keys (SCAN, never KEYS); the order is Redis's, not sorted.</remarks>
    public IAsyncEnumerable<IdempotencyRecord> ListAsync(IdempotencyRecordQuery query, CancellationToken cancellationToken) =>
        RedisAdmin.ListAsync(_connection, _prefix, query, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var deleted = await RedisAdmin.DeleteAsync(_connection, RedisKeyFor(key), cancellationToken).ConfigureAwait(false);
        if (deleted)
        {
            // Waiters on every node re-check and claim the key themselves; every node's deletion subscribers forget it.
            await _connection.RunAsync(static (db, p) => db.PublishAsync(p.Channel, p.Key), (Channel: _channel, Key: (StackExchange.Redis.RedisValue)key), cancellationToken).ConfigureAwait(false);
            await _connection.RunAsync(static (db, p) => db.PublishAsync(p.Channel, p.Key), (Channel: _channel, Key: (StackExchange.Redis.RedisValue)(DeletionSubscribers.MessagePrefix + key)), cancellationToken).ConfigureAwait(false);
            _signals.Signal(key);
            _deletionSubscribers.Deleted(key); // This process at once, even while its subscription is down.
        }

        return deleted;
    }

    /// <inheritdoc />
    /// <remarks>Settings include <c>maxmemory-policy</c>, <c>appendonly</c> and <c>save</c> when the server allows <c>CONFIG GET</c>.</remarks>
    public ValueTask<IdempotencyStoreDescription> DescribeAsync(CancellationToken cancellationToken) =>
        RedisAdmin.DescribeAsync(_connection, "redis", _prefix, cancellationToken);

    /// <inheritdoc />
    /// <remarks>Redis has no schema: nothing to apply.</remarks>
    public ValueTask<IdempotencySchemaMigration> MigrateAsync(CancellationToken cancellationToken) => ValueTask.FromResult(RedisAdmin.NoSchema);
}
