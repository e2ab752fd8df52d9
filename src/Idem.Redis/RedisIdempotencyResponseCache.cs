using StackExchange.Redis;

namespace Idem.Redis;

/// <summary>
/// An <see cref="IIdempotencyResponseCache"/> on Redis, for <see cref="TieredIdempotencyStore"/>: completed records as
/// hashes under <c>&lt;prefix&gt;{&lt;store key&gt;}</c> that expire at the record's own expiry (<c>PEXPIREAT</c>).
/// A get is one <c>HMGET</c>; a set is one script, so an entry is never visible without its expiry.
/// </summary>
public sealed class RedisIdempotencyResponseCache : IIdempotencyResponseCache, IAsyncDisposable, IDisposable
{
    private static readonly LuaScript SetScript = LuaScript.Prepare("""
        redis.call('DEL', @key)
        redis.call('HSET', @key, 's', '2', 'f', @fingerprint, 'o', @owner, 'l', @lease, 'e', @expires,
          'c', @status, 'h', @headers, 'b', @body, 'm', @omitted)
        redis.call('PEXPIREAT', @key, @expires)
        return 1
        """);

    private readonly RedisConnection _connection;
    private readonly string _prefix;

    /// <summary>Creates a cache; it connects (when it owns its multiplexer) on first use.</summary>
    /// <param name="options">The options (<see cref="RedisIdempotencyStoreOptions.KeyPrefix"/> should differ from any store's); validated here.</param>
    public RedisIdempotencyResponseCache(RedisIdempotencyStoreOptions options)
        : this(options, TimeProvider.System)
    {
    }

    internal RedisIdempotencyResponseCache(RedisIdempotencyStoreOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        options.Validate();
        var copy = options.Clone();
        _connection = new RedisConnection(copy, timeProvider);
        _prefix = copy.KeyPrefix;
    }

    /// <summary>The Redis key a store key is cached under; for diagnostics and tests.</summary>
    internal RedisKey RedisKeyFor(string storeKey) => RedisRecords.KeyFor(_prefix, storeKey);

    /// <inheritdoc />
    public async ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var values = await _connection.RunAsync(static (db, k) => db.HashGetAsync(k, RedisRecords.Fields), RedisKeyFor(key), cancellationToken).ConfigureAwait(false);
        var record = RedisRecords.Read(key, values);
        return record is { State: IdempotencyRecordState.Completed } ? record : null;
    }

    /// <inheritdoc />
    public async ValueTask SetAsync(IdempotencyRecord completed, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(completed);
        if (completed.State != IdempotencyRecordState.Completed || completed.Response is not { } response)
        {
            throw new ArgumentException("Only completed records with their response are cached.", nameof(completed));
        }

        var parameters = new
        {
            key = RedisKeyFor(completed.Key),
            fingerprint = (RedisValue)completed.Fingerprint,
            owner = (RedisValue)RedisRecords.Owner(completed.OwnerToken),
            lease = (RedisValue)completed.LeaseExpiresAt.ToUnixTimeMilliseconds(),
            expires = (RedisValue)completed.ExpiresAt.ToUnixTimeMilliseconds(),
            status = (RedisValue)response.StatusCode,
            headers = (RedisValue)StoredResponseHeaders.Encode(response.Headers),
            body = (RedisValue)response.Body.ToArray(),
            omitted = (RedisValue)(response.BodyOmitted ? 1 : 0),
        };
        await _connection.RunAsync(static (db, p) => db.ScriptEvaluateAsync(SetScript, p), parameters, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Closes the multiplexer when the cache created it.</summary>
    public ValueTask DisposeAsync() => _connection.DisposeAsync();

    /// <summary>Closes the multiplexer when the cache created it; prefer <see cref="DisposeAsync"/>.</summary>
    public void Dispose() => _connection.Dispose();
}
