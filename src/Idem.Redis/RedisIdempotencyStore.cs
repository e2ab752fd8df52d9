using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace Idem.Redis;

/// <summary>
/// An <see cref="IIdempotencyStore"/> on Redis (or Redis Cluster): the fastest store for many nodes. Claim, complete,
/// renew and release are one Lua script each (one atomic round trip); leases are judged by Redis's own clock
/// (<c>TIME</c> inside the script), never by the nodes'; retention is the key's TTL, so records vanish by themselves
/// and <see cref="PurgeExpiredAsync"/> has nothing to do. Waiters are woken through one pub/sub subscription per store
/// instance, with polling as the fallback; every call is bounded by
/// <see cref="RedisIdempotencyStoreOptions.OperationTimeout"/>.
/// </summary>
/// <remarks>
/// Redis keeps what it acknowledged only as durably as it is configured to (AOF, replicas). Where losing records in a
/// Redis failover is not acceptable, use PostgreSQL as the authority with Redis as a response cache
/// (<c>UsePostgreSqlStore(…).WithRedisResponseCache(…)</c>).
/// </remarks>
public sealed partial class RedisIdempotencyStore : IIdempotencyStore, IIdempotencyDeletionNotifier, IAsyncDisposable, IDisposable
{
    // Every script reads Redis's clock itself: leases and retention never depend on a node's clock.
    private const string Now = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        """;

    // Claims a free key, replaces a record past retention, or takes over an in-flight record whose lease ran out when
    // the fingerprint matches; otherwise returns the record that stands. A replaced record that had waiters publishes,
    // so they re-check and meet the new owner. Returns {1, took over, lease end, expiry} or {2, s, f, o, l, e, c, h, b, m}.
    private static readonly LuaScript ClaimScript = LuaScript.Prepare(Now + "\n" + """
        local cur = redis.call('HMGET', @key, 's', 'f', 'o', 'l', 'e', 'c', 'h', 'b', 'm', 'w')
        local took = 0
        if cur[1] then
          if tonumber(cur[5]) > now then
            if cur[1] == '1' and tonumber(cur[4]) <= now and cur[2] == @fingerprint then
              took = 1
            else
              return {2, cur[1], cur[2], cur[3], cur[4], cur[5], cur[6], cur[7], cur[8], cur[9]}
            end
          end
          if cur[10] then redis.call('PUBLISH', @channel, @storeKey) end
          redis.call('DEL', @key)
        end
        local lease = string.format('%.0f', now + tonumber(@lease))
        local expires = string.format('%.0f', now + tonumber(@retention))
        redis.call('HSET', @key, 's', '1', 'f', @fingerprint, 'o', @owner, 'l', lease, 'e', expires)
        if @principal ~= '' then redis.call('HSET', @key, 'p', @principal) end
        if @operation ~= '' then redis.call('HSET', @key, 'r', @operation) end
        redis.call('PEXPIREAT', @key, expires)
        return {1, took, lease, expires}
        """);

    // Fenced by the owner token: only the in-flight record's owner completes it. The TTL becomes the retention.
    private static readonly LuaScript CompleteScript = LuaScript.Prepare("""
        local cur = redis.call('HMGET', @key, 's', 'o', 'w')
        if cur[1] ~= '1' or cur[2] ~= @owner then return 0 end
        """ + "\n" + Now + "\n" + """
        local expires = string.format('%.0f', now + tonumber(@retention))
        redis.call('HSET', @key, 's', '2', 'e', expires, 'c', @status, 'h', @headers, 'b', @body, 'm', @omitted)
        redis.call('HDEL', @key, 'w')
        redis.call('PEXPIREAT', @key, expires)
        if cur[3] then redis.call('PUBLISH', @channel, @storeKey) end
        return 1
        """);

    private static readonly LuaScript ReleaseScript = LuaScript.Prepare("""
        local cur = redis.call('HMGET', @key, 's', 'o', 'w')
        if cur[1] ~= '1' or cur[2] ~= @owner then return 0 end
        redis.call('DEL', @key)
        if cur[3] then redis.call('PUBLISH', @channel, @storeKey) end
        return 1
        """);

    private static readonly LuaScript RenewScript = LuaScript.Prepare("""
        local cur = redis.call('HMGET', @key, 's', 'o')
        if cur[1] ~= '1' or cur[2] ~= @owner then return 0 end
        """ + "\n" + Now + "\n" + """
        redis.call('HSET', @key, 'l', string.format('%.0f', now + tonumber(@lease)))
        return 1
        """);

    // 1 when the record is still the observed owner's live claim; it is then flagged, so its completion, release or
    // takeover publishes. 0 when it changed already (the waiter re-checks at once).
    private static readonly LuaScript IsUnchangedScript = LuaScript.Prepare("""
        local cur = redis.call('HMGET', @key, 's', 'o', 'l')
        if cur[1] ~= '1' or cur[2] ~= @owner then return 0 end
        """ + "\n" + Now + "\n" + """
        if tonumber(cur[3]) <= now then return 0 end
        redis.call('HSET', @key, 'w', '1')
        return 1
        """);

    private readonly RedisConnection _connection;
    private readonly string _prefix;
    private readonly int _replicas;
    private readonly long _replicaTimeoutMilliseconds;
    private readonly RedisChannel _channel;
    private readonly RedisValue _channelName;
    private readonly ILogger _logger;
    private readonly KeyChangeSignals _signals = new();
    private readonly DeletionSubscribers _deletionSubscribers = new();
    private int _deletionListenerStarted;
    private volatile bool _listeningForDeletions;
    private IConnectionMultiplexer? _restoreWatched;
    private readonly object _subscribeGate = new();
    private readonly Action<RedisChannel, RedisValue> _onMessage;
    private Task? _subscribed;
    private ISubscriber? _subscriber;
    private int _disposed;

    /// <summary>Creates a store; it connects (when it owns its multiplexer) on first use.</summary>
    /// <param name="options">The options; validated here.</param>
    /// <param name="loggerFactory">Where the store logs subscription failures; none when <see langword="null"/>.</param>
    public RedisIdempotencyStore(RedisIdempotencyStoreOptions options, ILoggerFactory? loggerFactory = null)
        : this(options, loggerFactory, TimeProvider.System)
    {
    }

    internal RedisIdempotencyStore(RedisIdempotencyStoreOptions options, ILoggerFactory? loggerFactory, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        options.Validate();
        var copy = options.Clone();
        _connection = new RedisConnection(copy, timeProvider);
        _prefix = copy.KeyPrefix;
        _replicas = copy.RequiredReplicaAcknowledgements;
        _replicaTimeoutMilliseconds = RedisRecords.Milliseconds(copy.ReplicaAcknowledgementTimeout);
        var channelName = copy.KeyPrefix + "changed";
        _channel = RedisChannel.Literal(channelName);
        _channelName = channelName;
        _logger = loggerFactory?.CreateLogger<RedisIdempotencyStore>() ?? NullLogger<RedisIdempotencyStore>.Instance;
        _onMessage = (_, message) =>
        {
            if (message.IsNullOrEmpty)
            {
                return;
            }

            var text = (string)message!;
            if (!_deletionSubscribers.TryDeliver(text))
            {
                _signals.Signal(text);
            }
        };
    }

    /// <inheritdoc />
    /// <remarks>
    /// Heard on the store's change channel (<c>&lt;prefix&gt;changed</c>, the subscription waiters use), published by
    /// <see cref="DeleteAsync"/> on any node or process. The first subscriber makes the store subscribe, retrying in the
    /// background until Redis answers; <paramref name="missed"/> runs once subscribed and after every reconnection of the
    /// subscription's connection (StackExchange.Redis subscribes again by itself).
    /// </remarks>
    public IDisposable SubscribeToDeletions(Action<string> deleted, Action missed)
    {
        var subscription = _deletionSubscribers.Add(deleted, missed);
        if (Interlocked.Exchange(ref _deletionListenerStarted, 1) == 0)
        {
            _ = Task.Run(ListenForDeletionsAsync);
        }

        return subscription;
    }

    /// <summary>Whether the store hears deletions (subscribed for its deletion subscribers); for tests.</summary>
    internal bool ListeningForDeletions => _listeningForDeletions;

    /// <summary>Subscribes to the change channel for deletions, retrying with a capped back-off until it is done or the store is disposed.</summary>
    private async Task ListenForDeletionsAsync()
    {
        var delay = TimeSpan.FromMilliseconds(100);
        while (Volatile.Read(ref _disposed) == 0)
        {
            try
            {
                var multiplexer = await _connection.GetMultiplexerAsync(CancellationToken.None).ConfigureAwait(false);
                lock (_subscribeGate)
                {
                    if (_restoreWatched is null)
                    {
                        _restoreWatched = multiplexer;
                        multiplexer.ConnectionRestored += OnConnectionRestored;
                    }
                }

                await EnsureSubscribedAsync(CancellationToken.None).ConfigureAwait(false);
                if (Volatile.Read(ref _subscribed) is { IsCompletedSuccessfully: true })
                {
                    _deletionSubscribers.Missed();
                    _listeningForDeletions = true; // after "missed": tests take it as "listening"
                    return;
                }
            }
#pragma warning disable CA1031 // Retried until Redis answers; EnsureSubscribedAsync logs its own failures.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.SubscribeFailed(_logger, ex, _channel.ToString());
            }

            await Task.Delay(delay).ConfigureAwait(false);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(5).Ticks));
        }
    }

    private void OnConnectionRestored(object? sender, ConnectionFailedEventArgs e)
    {
        if (e.ConnectionType == ConnectionType.Subscription)
        {
            // Messages published while the subscription's connection was down were lost.
            _deletionSubscribers.Missed();
        }
    }

    /// <summary>The Redis key a store key is kept under; for diagnostics and tests.</summary>
    internal RedisKey RedisKeyFor(string storeKey) => RedisRecords.KeyFor(_prefix, storeKey);

    /// <inheritdoc />
    public async ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request.Key);
        ArgumentNullException.ThrowIfNull(request.Fingerprint);
        var parameters = new
        {
            key = RedisKeyFor(request.Key),
            fingerprint = (RedisValue)request.Fingerprint,
            owner = (RedisValue)RedisRecords.Owner(request.OwnerToken),
            lease = (RedisValue)RedisRecords.Milliseconds(request.Lease),
            retention = (RedisValue)RedisRecords.Milliseconds(request.Retention),
            channel = _channelName,
            storeKey = (RedisValue)request.Key,
            principal = (RedisValue)(request.Metadata?.PrincipalHash ?? string.Empty),
            operation = (RedisValue)(request.Metadata?.Operation ?? string.Empty),
        };
        var result = await _connection.RunAsync(static (db, p) => db.ScriptEvaluateAsync(ClaimScript, p), parameters, cancellationToken).ConfigureAwait(false);
        var values = (RedisResult[])result!;
        if ((long)values[0] == 1)
        {
            if (_replicas > 0)
            {
                await EnsureClaimReplicatedAsync(request.Key, request.OwnerToken, cancellationToken).ConfigureAwait(false);
            }

            if ((long)values[1] == 0)
            {
                return ClaimResult.NewClaim;
            }

            var record = new IdempotencyRecord
            {
                Key = request.Key,
                State = IdempotencyRecordState.InFlight,
                Fingerprint = request.Fingerprint,
                OwnerToken = request.OwnerToken,
                LeaseExpiresAt = DateTimeOffset.FromUnixTimeMilliseconds((long)values[2]),
                ExpiresAt = DateTimeOffset.FromUnixTimeMilliseconds((long)values[3]),
                Metadata = request.Metadata,
            };
            return new ClaimResult(ClaimStatus.Claimed, record, TookOver: true);
        }

        var standing = RedisRecords.Read(request.Key, values.AsSpan(1).ToArray())
            ?? throw new InvalidDataException("The Redis claim script returned no record.");
        return new ClaimResult(standing.State == IdempotencyRecordState.Completed ? ClaimStatus.Completed : ClaimStatus.InFlight, standing);
    }

    /// <inheritdoc />
    public async ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);

        // Copied: the response's memory belongs to the caller, and the command may be written after this call returns
        // (when it timed out).
        var parameters = new
        {
            key = RedisKeyFor(key),
            owner = (RedisValue)RedisRecords.Owner(ownerToken),
            retention = (RedisValue)RedisRecords.Milliseconds(retention),
            status = (RedisValue)response.StatusCode,
            headers = (RedisValue)StoredResponseHeaders.Encode(response.Headers),
            body = (RedisValue)response.Body.ToArray(),
            omitted = (RedisValue)(response.BodyOmitted ? 1 : 0),
            channel = _channelName,
            storeKey = (RedisValue)key,
        };
        var result = await _connection.RunAsync(static (db, p) => db.ScriptEvaluateAsync(CompleteScript, p), parameters, cancellationToken).ConfigureAwait(false);
        var completed = (long)result == 1;
        if (completed)
        {
            // Waiters in this process wake even while the subscription is down.
            _signals.Signal(key);
            if (_replicas > 0)
            {
                // The handler ran and the response is stored on the master: nothing to undo, so a short count is only
                // reported. A failure of the WAIT itself (the master died) surfaces as the store failure it is.
                var acknowledged = await WaitForReplicasAsync(key, cancellationToken).ConfigureAwait(false);
                if (acknowledged < _replicas)
                {
                    Log.CompletionNotReplicated(_logger, key, acknowledged, _replicas);
                }
            }
        }

        return completed;
    }

    /// <inheritdoc />
    public async ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var parameters = new
        {
            key = RedisKeyFor(key),
            owner = (RedisValue)RedisRecords.Owner(ownerToken),
            channel = _channelName,
            storeKey = (RedisValue)key,
        };
        var result = await _connection.RunAsync(static (db, p) => db.ScriptEvaluateAsync(ReleaseScript, p), parameters, cancellationToken).ConfigureAwait(false);
        var released = (long)result == 1;
        if (released)
        {
            _signals.Signal(key);
        }

        return released;
    }

    /// <inheritdoc />
    public async ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var parameters = new
        {
            key = RedisKeyFor(key),
            owner = (RedisValue)RedisRecords.Owner(ownerToken),
            lease = (RedisValue)RedisRecords.Milliseconds(lease),
        };
        var result = await _connection.RunAsync(static (db, p) => db.ScriptEvaluateAsync(RenewScript, p), parameters, cancellationToken).ConfigureAwait(false);
        return (long)result == 1;
    }

    /// <inheritdoc />
    public async ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var values = await _connection.RunAsync(static (db, k) => db.HashGetAsync(k, RedisRecords.Fields), RedisKeyFor(key), cancellationToken).ConfigureAwait(false);
        return RedisRecords.Read(key, values);
    }

    /// <inheritdoc />
    /// <remarks>Always 0: every record carries a TTL (its retention), so Redis deletes it by itself.</remarks>
    public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxRecords);
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(0);
    }

    /// <inheritdoc />
    /// <remarks>
    /// Woken by a message on <c>&lt;prefix&gt;changed</c> from any node (or at once by a change made in this process).
    /// The store's one subscription is in place before the record is re-read and flagged as waited for, so a change
    /// after that read always publishes and is heard. While the subscription is down the wait just times out and the
    /// caller polls.
    /// </remarks>
    public async ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureSubscribedAsync(cancellationToken).ConfigureAwait(false);
        await _signals.WaitAsync(key, ct => HasChangedAsync(key, observedOwner, ct), timeout, TimeProvider.System, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Ends the subscription and, when the store created it, closes the multiplexer.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        ISubscriber? subscriber;
        lock (_subscribeGate)
        {
            subscriber = _subscriber;
            if (_restoreWatched is not null)
            {
                _restoreWatched.ConnectionRestored -= OnConnectionRestored;
            }
        }

        if (subscriber is not null)
        {
            try
            {
                // Only this store's handler: an application's multiplexer may carry other subscriptions to the channel.
                await subscriber.UnsubscribeAsync(_channel, _onMessage).WaitAsync(_connection.Timeout).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Disposal must not throw because Redis is unreachable.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.UnsubscribeFailed(_logger, ex, _channel.ToString());
            }
        }

        await _connection.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Closes the multiplexer when the store created it (its subscriptions go with it); prefer <see cref="DisposeAsync"/>.
    /// This exists so a synchronously disposed service provider does not throw. On an application's multiplexer the
    /// store's handler is removed without waiting for Redis.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        ISubscriber? subscriber;
        lock (_subscribeGate)
        {
            subscriber = _subscriber;
            if (_restoreWatched is not null)
            {
                _restoreWatched.ConnectionRestored -= OnConnectionRestored;
            }
        }

        subscriber?.Unsubscribe(_channel, _onMessage, CommandFlags.FireAndForget);
        _connection.Dispose();
    }

    /// <summary>
    /// Waits for <see cref="RedisIdempotencyStoreOptions.RequiredReplicaAcknowledgements"/> replicas to have the claim;
    /// short of them the claim is released (best effort: the handler has not run, so freeing the key is always safe) and
    /// the call throws, so the executor fails the request closed instead of running on a claim a failover can lose.
    /// </summary>
    private async ValueTask EnsureClaimReplicatedAsync(string key, Guid owner, CancellationToken cancellationToken)
    {
        long acknowledged;
        try
        {
            acknowledged = await WaitForReplicasAsync(key, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            await TryReleaseUnreplicatedAsync(key, owner).ConfigureAwait(false);
            throw;
        }

        if (acknowledged < _replicas)
        {
            Log.ClaimNotReplicated(_logger, key, acknowledged, _replicas);
            await TryReleaseUnreplicatedAsync(key, owner).ConfigureAwait(false);
            throw new RedisException($"The claim was acknowledged by {acknowledged} of {_replicas} required replicas within {_replicaTimeoutMilliseconds} ms; it was released.");
        }
    }

    private async ValueTask TryReleaseUnreplicatedAsync(string key, Guid owner)
    {
        try
        {
            await ReleaseAsync(key, owner, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Best effort: an unreleased claim frees itself when its lease runs out.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    /// <summary>
    /// <c>WAIT numreplicas timeout</c> on the master that holds <paramref name="key"/>, through the same connection the
    /// script went over (StackExchange.Redis keeps one interactive connection per server), so it covers that write.
    /// </summary>
    private Task<long> WaitForReplicasAsync(string key, CancellationToken cancellationToken) =>
        _connection.RunAsync(
            static async (db, state) =>
            {
                var endpoint = await db.IdentifyEndpointAsync(state.Key).ConfigureAwait(false)
                    ?? throw new RedisException("No master serves the key's slot.");
                var result = await db.Multiplexer.GetServer(endpoint).ExecuteAsync("WAIT", state.Replicas, state.Timeout).ConfigureAwait(false);
                return (long)result;
            },
            (Key: RedisKeyFor(key), Replicas: _replicas, Timeout: _replicaTimeoutMilliseconds),
            cancellationToken);

    private async ValueTask<bool> HasChangedAsync(string key, Guid observedOwner, CancellationToken cancellationToken)
    {
        var parameters = new { key = RedisKeyFor(key), owner = (RedisValue)RedisRecords.Owner(observedOwner) };
        var result = await _connection.RunAsync(static (db, p) => db.ScriptEvaluateAsync(IsUnchangedScript, p), parameters, cancellationToken).ConfigureAwait(false);
        return (long)result == 0;
    }

    /// <summary>
    /// Subscribes once per store instance (StackExchange.Redis re-subscribes by itself after reconnecting). A failed
    /// attempt is logged and retried by the next wait; the wait itself goes on and falls back to polling.
    /// </summary>
    private async ValueTask EnsureSubscribedAsync(CancellationToken cancellationToken)
    {
        var subscribed = Volatile.Read(ref _subscribed);
        if (subscribed is { IsCompletedSuccessfully: true })
        {
            return;
        }

        lock (_subscribeGate)
        {
            if (_subscribed is null || _subscribed.IsFaulted || _subscribed.IsCanceled)
            {
                _subscribed = SubscribeAsync();
            }

            subscribed = _subscribed;
        }

        try
        {
            await subscribed.WaitAsync(_connection.Timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            Log.SubscribeFailed(_logger, ex, _channel.ToString());
        }
    }

    private async Task SubscribeAsync()
    {
        var multiplexer = await _connection.GetMultiplexerAsync(CancellationToken.None).ConfigureAwait(false);
        var subscriber = multiplexer.GetSubscriber();
        lock (_subscribeGate)
        {
            _subscriber = subscriber;
        }

        await subscriber.SubscribeAsync(_channel, _onMessage).ConfigureAwait(false);
        Log.Subscribed(_logger, _channel.ToString());
    }
}
