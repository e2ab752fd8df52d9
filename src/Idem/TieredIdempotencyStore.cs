using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Idem;

/// <summary>
/// A durable <see cref="IIdempotencyStore"/> (the authority: every claim, completion, release and renewal) with a fast
/// <see cref="IIdempotencyResponseCache"/> in front for replays. A replay found in the cache costs no trip to the durable
/// store; completed records are written to the cache after completion and whenever the durable store answers with one.
/// </summary>
/// <remarks>
/// The cache can only make things faster, never wrong: it holds completed records alone (immutable until they expire),
/// so a hit is the same answer the durable store would give, and claims are never made in it. A cache that fails or is
/// slower than <see cref="TieredIdempotencyStoreOptions.CacheTimeout"/> is logged, counted and skipped for
/// <see cref="TieredIdempotencyStoreOptions.CacheBackoff"/>; the request goes on against the durable store. A cache outage
/// therefore costs speed, never a duplicate and never a failed request. While it lasts the store is in <em>fallback</em>:
/// <see cref="CheckHealthAsync"/> reports it as degraded and the <c>idem.cache.fallback</c> gauge is 1.
/// </remarks>
public sealed partial class TieredIdempotencyStore : IIdempotencyStore, IIdempotencyStoreDecorator, IIdempotencyHealthReporter, IAsyncDisposable, IDisposable
{
    // Fingerprints of claims made through this instance, so a completion can write a whole record to the cache without
    // another durable read. Bounded: past it a completion skips the cache and the first replay fills it instead.
    private const int MaxTrackedClaims = 10_000;

    private readonly IIdempotencyStore _durable;
    private readonly IIdempotencyResponseCache _cache;
    private readonly TieredIdempotencyStoreOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly IdempotencyMetrics? _metrics;
    private readonly bool _ownsDurable;
    private readonly bool _ownsCache;
    private readonly ConcurrentDictionary<(string Key, Guid Owner), string> _claims = new();
    private long _skipCacheUntil = long.MinValue;
    private long _cacheHits;
    private long _cacheFailures;
    private long _fallbackSinceTicks; // UTC ticks of the first cache failure of the current fallback; 0 when the cache answers
    private long _lastCacheFailureTicks;
    private int _disposed;

    /// <summary>Creates a tiered store over <paramref name="durable"/> and <paramref name="cache"/>, which the caller owns and disposes.</summary>
    /// <param name="durable">The authority for claims (e.g. PostgreSQL).</param>
    /// <param name="cache">The cache of completed records (e.g. Redis).</param>
    /// <param name="options">The cache's deadline and back-off; the defaults when <see langword="null"/>.</param>
    /// <param name="timeProvider">The clock for deadlines and back-off; the system clock when <see langword="null"/>.</param>
    /// <param name="loggerFactory">Where cache failures are logged; none when <see langword="null"/>.</param>
    /// <param name="metrics">Where cache hits and failures are counted (<c>idem.cache.hits</c>, <c>idem.cache.errors</c>); none when <see langword="null"/>.</param>
    public TieredIdempotencyStore(
        IIdempotencyStore durable,
        IIdempotencyResponseCache cache,
        TieredIdempotencyStoreOptions? options = null,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null,
        IdempotencyMetrics? metrics = null)
        : this(durable, cache, options, timeProvider, loggerFactory, metrics, ownsDurable: false, ownsCache: false)
    {
    }

    internal TieredIdempotencyStore(
        IIdempotencyStore durable,
        IIdempotencyResponseCache cache,
        TieredIdempotencyStoreOptions? options,
        TimeProvider? timeProvider,
        ILoggerFactory? loggerFactory,
        IdempotencyMetrics? metrics,
        bool ownsDurable,
        bool ownsCache)
    {
        ArgumentNullException.ThrowIfNull(durable);
        ArgumentNullException.ThrowIfNull(cache);
        var copy = options?.Clone() ?? new TieredIdempotencyStoreOptions();
        copy.Validate();
        _durable = durable;
        _cache = cache;
        _options = copy;
        _timeProvider = timeProvider ?? TimeProvider.System;
        _logger = loggerFactory?.CreateLogger<TieredIdempotencyStore>() ?? NullLogger<TieredIdempotencyStore>.Instance;
        _metrics = metrics;
        _ownsDurable = ownsDurable;
        _ownsCache = ownsCache;
        _metrics?.CacheFallback(false);
    }

    /// <summary>The durable store every claim goes to.</summary>
    public IIdempotencyStore Durable => _durable;

    /// <summary>How many claims were answered from the cache alone.</summary>
    public long CacheHits => Interlocked.Read(ref _cacheHits);

    /// <summary>Claims made through this store whose completion it still expects, to write the whole record to the cache; for tests.</summary>
    internal int TrackedClaims => _claims.Count;

    IIdempotencyStore IIdempotencyStoreDecorator.Inner => _durable;

    // Recovery points and joined transactions are the durable store's (the executor finds them there). A joined
    // completion is not written to the cache: its response is the store's only once its transaction commits, and the
    // first replay reads it through.
    void IIdempotencyStoreDecorator.OnCompletedBeneath(string key, Guid ownerToken) => _claims.TryRemove((key, ownerToken), out _);

    /// <summary>How many cache calls failed or timed out (each logged; the request went on against the durable store).</summary>
    public long CacheFailures => Interlocked.Read(ref _cacheFailures);

    /// <summary>The last cache failure; for diagnostics and tests.</summary>
    internal Exception? LastCacheFailure { get; private set; }

    /// <summary>
    /// <see langword="true"/> while the store serves without its cache: from a failed or timed-out cache call until the
    /// next cache call (a request's or a health probe's) that succeeds.
    /// </summary>
    public bool IsFallbackActive => Interlocked.Read(ref _fallbackSinceTicks) != 0;

    /// <summary>
    /// Probes both tiers with a real read each: <see cref="IdempotencyHealthStatus.Unhealthy"/> when the durable store
    /// cannot answer (protected requests get 503), <see cref="IdempotencyHealthStatus.Degraded"/> while the cache cannot
    /// (or the store is still in fallback: replays cost a durable read, never a duplicate), otherwise healthy. The data
    /// holds each tier's status, latency and last error, and since when the fallback has been active.
    /// </summary>
    public async ValueTask<IdempotencyHealthResult> CheckHealthAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var durable = await IdempotencyStoreHealth.ProbeAsync(_durable, timeout, cancellationToken).ConfigureAwait(false);
        var (cacheLatency, cacheError) = await IdempotencyStoreHealth.TimeAsync(
            static (c, ct) => c.GetAsync(IdempotencyStoreHealth.ProbeKey, ct), _cache, timeout, cancellationToken).ConfigureAwait(false);
        if (cacheError is null)
        {
            EndFallback();
        }
        else
        {
            OnCacheFailure(cacheError, fromRequest: false);
        }

        var data = new Dictionary<string, object>
        {
            ["durable.store"] = _durable.GetType().Name,
            ["durable.status"] = durable.Status.ToString(),
        };
        foreach (var (name, value) in durable.Data)
        {
            data.TryAdd("durable." + name, value);
        }

        var fallbackSince = Interlocked.Read(ref _fallbackSinceTicks);
        var lastFailure = Interlocked.Read(ref _lastCacheFailureTicks);
        data["cache.store"] = _cache.GetType().Name;
        data["cache.status"] = (cacheError is null ? IdempotencyHealthStatus.Healthy : IdempotencyHealthStatus.Unhealthy).ToString();
        data["cache.latency_ms"] = Math.Round(cacheLatency.TotalMilliseconds, 2);
        data["cache.fallback_active"] = fallbackSince != 0;
        if (fallbackSince != 0)
        {
            data["cache.fallback_since"] = new DateTimeOffset(fallbackSince, TimeSpan.Zero).ToString("O", System.Globalization.CultureInfo.InvariantCulture);
        }

        if (LastCacheFailure is { } last)
        {
            data["cache.last_error"] = IdempotencyStoreHealth.Describe(last);
            data["cache.last_error_at"] = new DateTimeOffset(lastFailure, TimeSpan.Zero).ToString("O", System.Globalization.CultureInfo.InvariantCulture);
        }

        data["cache.hits"] = CacheHits;
        data["cache.failures"] = CacheFailures;

        if (durable.Status == IdempotencyHealthStatus.Unhealthy)
        {
            return new IdempotencyHealthResult(
                IdempotencyHealthStatus.Unhealthy,
                $"The durable store ({_durable.GetType().Name}) does not answer: protected requests get 503 until it does.",
                data,
                durable.Exception);
        }

        if (cacheError is not null || fallbackSince != 0)
        {
            return new IdempotencyHealthResult(
                IdempotencyHealthStatus.Degraded,
                $"The response cache ({_cache.GetType().Name}) does not answer: claims and replays are served by the durable store alone (slower, never a duplicate).",
                data,
                cacheError);
        }

        return new IdempotencyHealthResult(
            durable.Status,
            durable.Status == IdempotencyHealthStatus.Healthy ? "Both tiers answer." : durable.Description,
            data,
            durable.Exception);
    }

    /// <inheritdoc />
    public async ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request.Key);
        ArgumentNullException.ThrowIfNull(request.Fingerprint);

        // The cache holds completed records only: a hit is the replay (the caller compares fingerprints as usual).
        var cached = await CallCacheAsync(static (c, k, ct) => c.GetAsync(k, ct), request.Key, "get", cancellationToken).ConfigureAwait(false);
        if (cached is { State: IdempotencyRecordState.Completed, Response: not null })
        {
            Interlocked.Increment(ref _cacheHits);
            _metrics?.CacheHit();
            return new ClaimResult(ClaimStatus.Completed, cached);
        }

        var result = await _durable.TryClaimAsync(request, cancellationToken).ConfigureAwait(false);
        switch (result.Status)
        {
            case ClaimStatus.Claimed when _claims.Count < MaxTrackedClaims:
                _claims[(request.Key, request.OwnerToken)] = request.Fingerprint;
                break;
            case ClaimStatus.Completed when result.Record is { Response: not null } completed:
                // Read-through: the next replay of this key is served by the cache.
                await CallCacheAsync(static (c, r, ct) => Unit(c.SetAsync(r, ct)), completed, "set", cancellationToken).ConfigureAwait(false);
                break;
        }

        return result;
    }

    /// <inheritdoc />
    public async ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);
        var tracked = _claims.TryRemove((key, ownerToken), out var fingerprint);
        var completed = await _durable.CompleteAsync(key, ownerToken, response, retention, cancellationToken).ConfigureAwait(false);
        if (completed && tracked)
        {
            // Only after the durable store accepted it: the cache never holds an outcome the authority does not.
            // Its expiry is judged by this node's clock; a few seconds of skew against a retention of hours only
            // shortens or lengthens how long the (unchanging) replay is served from the cache.
            var now = _timeProvider.GetUtcNow();
            var record = new IdempotencyRecord
            {
                Key = key,
                State = IdempotencyRecordState.Completed,
                Fingerprint = fingerprint!,
                OwnerToken = ownerToken,
                LeaseExpiresAt = now,
                ExpiresAt = now + retention,
                Response = response,
            };
            await CallCacheAsync(static (c, r, ct) => Unit(c.SetAsync(r, ct)), record, "set", cancellationToken).ConfigureAwait(false);
        }

        return completed;
    }

    /// <inheritdoc />
    public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        _claims.TryRemove((key, ownerToken), out _);
        return _durable.ReleaseAsync(key, ownerToken, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken) =>
        _durable.RenewAsync(key, ownerToken, lease, cancellationToken);

    /// <inheritdoc />
    public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken) =>
        _durable.GetAsync(key, cancellationToken);

    /// <inheritdoc />
    public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken) =>
        _durable.PurgeExpiredAsync(maxRecords, cancellationToken);

    /// <inheritdoc />
    public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) =>
        _durable.WaitForChangeAsync(key, observedOwner, timeout, cancellationToken);

    /// <summary>Disposes the durable store and the cache when this store created them (registration through the builder).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (var part in new object?[] { _ownsCache ? _cache : null, _ownsDurable ? _durable : null })
        {
            if (part is IAsyncDisposable asyncDisposable)
            {
                await asyncDisposable.DisposeAsync().ConfigureAwait(false);
            }
            else
            {
                (part as IDisposable)?.Dispose();
            }
        }
    }

    /// <summary>Disposes the parts this store created, synchronously where they allow it; prefer <see cref="DisposeAsync"/>.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (_ownsCache)
        {
            (_cache as IDisposable)?.Dispose();
        }

        if (_ownsDurable)
        {
            (_durable as IDisposable)?.Dispose();
        }
    }

    private void OnCacheFailure(Exception error, bool fromRequest)
    {
        if (fromRequest)
        {
            Interlocked.Increment(ref _cacheFailures);
        }

        LastCacheFailure = error;
        var now = _timeProvider.GetUtcNow().UtcTicks;
        Interlocked.Exchange(ref _lastCacheFailureTicks, now);
        if (Interlocked.CompareExchange(ref _fallbackSinceTicks, now, 0) == 0)
        {
            _metrics?.CacheFallback(true);
        }
    }

    private void EndFallback()
    {
        if (Interlocked.Exchange(ref _fallbackSinceTicks, 0) != 0)
        {
            _metrics?.CacheFallback(false);
        }
    }

    private static async ValueTask<bool> Unit(ValueTask task)
    {
        await task.ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// Calls the cache under its deadline unless it is backing off. Returns the default on a skip, a failure or a
    /// timeout (logged, counted, and the back-off starts); only the caller's own cancellation surfaces.
    /// </summary>
    private async ValueTask<TResult?> CallCacheAsync<TArg, TResult>(
        Func<IIdempotencyResponseCache, TArg, CancellationToken, ValueTask<TResult>> call,
        TArg argument,
        string operation,
        CancellationToken cancellationToken)
    {
        if (_timeProvider.GetTimestamp() < Interlocked.Read(ref _skipCacheUntil))
        {
            return default;
        }

        using var deadline = new CallDeadline(_options.CacheTimeout, _timeProvider, cancellationToken);
        try
        {
            var result = await deadline.Bound(call(_cache, argument, deadline.Token)).ConfigureAwait(false);
            if (Interlocked.Read(ref _fallbackSinceTicks) != 0)
            {
                EndFallback();
            }

            return result;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
#pragma warning disable CA1031 // Any cache failure is the same to the caller: a miss; it is logged and counted.
        catch (Exception caught)
#pragma warning restore CA1031
        {
            var ex = caught is OperationCanceledException && deadline.IsCancellationRequested
                ? new TimeoutException($"The response cache did not answer a {operation} within {_options.CacheTimeout.TotalMilliseconds} ms.", caught)
                : caught;
            OnCacheFailure(ex, fromRequest: true);
            _metrics?.CacheError(operation);
            var backoffTicks = (long)(_options.CacheBackoff.TotalSeconds * _timeProvider.TimestampFrequency);
            Interlocked.Exchange(ref _skipCacheUntil, _timeProvider.GetTimestamp() + backoffTicks);
            Log.ResponseCacheFailed(_logger, ex, operation, _options.CacheBackoff);
            return default;
        }
    }
}
