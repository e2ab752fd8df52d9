using System.Collections.Concurrent;

namespace Idem;

/// <summary>
/// A node's in-process cache of completed records in front of any <see cref="IIdempotencyStore"/>: a claim of a key
/// whose completed record is cached is answered from memory, without a round trip. Everything else (claims of new or
/// in-flight keys, completions, renewals, releases, reads, purges and waits) goes to the store unchanged, and the
/// executor records recovery points (<see cref="IRecoveryPointStore"/>) and completes joined transactions
/// (<see cref="ITransactionalIdempotencyStore"/>) in the store beneath when it offers them: the cache turns no feature off.
/// </summary>
/// <remarks>
/// <para>
/// A completed record never changes until it expires: no claim may take it over, release it or complete it again
/// before then, and a purge deletes only expired records. So a cached completed record is exactly the answer the store
/// would give, for as long as the store keeps it. The cache never holds an in-flight record, and forgets every entry
/// no later than the store's expiry: an entry read from the store is dropped
/// <see cref="LocalReplayCacheOptions.StoreClockTolerance"/> before the record's own expiry (which is by the store's
/// clock), and an entry this node completed is timed by this node's clock from the moment its completion was sent,
/// which is no later than the moment the store started counting its retention.
/// </para>
/// <para>
/// Bounded by <see cref="LocalReplayCacheOptions.MaxBytes"/>; past it, entries not replayed since the eviction hand last
/// passed them go first (CLOCK, an approximation of LRU that needs no lock on a hit). A hit takes no lock at all; an
/// insert takes only the concurrent dictionary's per-bucket lock; eviction runs on one inserting thread at a time, and
/// the others skip it rather than wait.
/// </para>
/// <para>
/// An operator may still delete a record before it expires (<see cref="IIdempotencyStoreAdmin.DeleteAsync"/>, for example
/// <c>idem keys purge KEY</c>). When the store tells its nodes of deletions (<see cref="IIdempotencyDeletionNotifier"/>:
/// the PostgreSQL, Redis and tiered stores do), the cache forgets a deleted key as soon as the store's notification
/// arrives, and forgets everything when the store says notifications may have been missed; a record read from the store
/// while a deletion arrived is not cached. Over a store that does not notify, a deleted record may be replayed from a
/// node's cache until its retention ends.
/// </para>
/// </remarks>
public sealed class LocalReplayCacheStore : IIdempotencyStore, IIdempotencyStoreDecorator, IIdempotencyHealthReporter, IAsyncDisposable, IDisposable
{
    // A fixed estimate of what an entry costs besides its strings and body: the entry, the record, the stored response,
    // the header array and the dictionary node.
    private const int EntryOverheadBytes = 320;

    // Fingerprints of claims made through this instance, so a completion can cache a whole record. Bounded: past it a
    // completion is not cached and the first replay caches it instead.
    private const int MaxTrackedClaims = 10_000;

    private readonly IIdempotencyStore _inner;
    private readonly LocalReplayCacheOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly IdempotencyMetrics? _metrics;
    private readonly bool _ownsInner;
    private readonly long _maxEntryBytes;
    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<Entry> _clock = new();
    private readonly ConcurrentDictionary<(string Key, Guid Owner), string> _claims = new();
    private long _bytes;
    private int _count;
    private int _queued;
    private int _evicting;
    private long _hits;
    private int _disposed;

    // Advanced by every deletion notification (and every "missed"): a record read from the store or completed while it
    // moved may be a deleted one, and is not cached.
    private long _deletionEpoch;
    private readonly IDisposable? _deletions;

    /// <summary>Creates a cache in front of <paramref name="inner"/>, which the caller owns and disposes.</summary>
    /// <param name="inner">The store that stays the authority.</param>
    /// <param name="options">The size bound and clock tolerance; the defaults when <see langword="null"/>.</param>
    /// <param name="timeProvider">This node's clock; the system clock when <see langword="null"/>.</param>
    /// <param name="metrics">Where hits are counted (<c>idem.replay_cache.hits</c>); none when <see langword="null"/>.</param>
    public LocalReplayCacheStore(IIdempotencyStore inner, LocalReplayCacheOptions? options = null, TimeProvider? timeProvider = null, IdempotencyMetrics? metrics = null)
        : this(inner, options, timeProvider, metrics, ownsInner: false)
    {
    }

    internal LocalReplayCacheStore(IIdempotencyStore inner, LocalReplayCacheOptions? options, TimeProvider? timeProvider, IdempotencyMetrics? metrics, bool ownsInner)
    {
        ArgumentNullException.ThrowIfNull(inner);
        var copy = options?.Clone() ?? new LocalReplayCacheOptions();
        copy.Validate();
        _inner = inner;
        _options = copy;
        _timeProvider = timeProvider ?? TimeProvider.System;
        _metrics = metrics;
        _ownsInner = ownsInner;
        _maxEntryBytes = copy.MaxBytes / 16;
        _deletions = (inner as IIdempotencyDeletionNotifier)?.SubscribeToDeletions(OnDeleted, OnDeletionsMissed);
    }

    /// <summary>The store every miss and every write goes to.</summary>
    public IIdempotencyStore Inner => _inner;

    /// <summary>Claims made through this cache whose completion it still expects (only with <see cref="LocalReplayCacheOptions.CacheCompletions"/>); for tests.</summary>
    internal int TrackedClaims => _claims.Count;

    /// <summary>How many claims were answered from the cache.</summary>
    public long Hits => Interlocked.Read(ref _hits);

    /// <summary>How many records the cache holds now.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>The estimated bytes the cache holds now.</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <inheritdoc />
    public ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request.Key);
        ArgumentNullException.ThrowIfNull(request.Fingerprint);
        if (_entries.TryGetValue(request.Key, out var entry))
        {
            if (_timeProvider.GetTimestamp() < entry.ExpiresAt)
            {
                if (entry.Referenced == 0)
                {
                    entry.Referenced = 1; // Written only when clear: a hot entry's cache line is not written on every hit.
                }

                Interlocked.Increment(ref _hits);
                _metrics?.ReplayCacheHit();
                return new ValueTask<ClaimResult>(new ClaimResult(ClaimStatus.Completed, entry.Record));
            }

            Remove(entry);
        }

        var epoch = Volatile.Read(ref _deletionEpoch);
        var pending = _inner.TryClaimAsync(request, cancellationToken);
        return pending.IsCompletedSuccessfully
            ? new ValueTask<ClaimResult>(OnClaimed(request, pending.Result, epoch))
            : AwaitClaimAsync(pending, request, epoch);
    }

    /// <inheritdoc />
    public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);
        if (!_options.CacheCompletions || !_claims.TryRemove((key, ownerToken), out var fingerprint))
        {
            return _inner.CompleteAsync(key, ownerToken, response, retention, cancellationToken);
        }

        return CompleteAndCacheAsync(key, ownerToken, fingerprint, response, retention, cancellationToken);
    }

    // A joined transaction completes in the store beneath (the cache has no transaction to join) and is not cached:
    // its response is the store's only once the transaction commits, and the first replay caches it from there.
    void IIdempotencyStoreDecorator.OnCompletedBeneath(string key, Guid ownerToken) => _claims.TryRemove((key, ownerToken), out _);

    /// <inheritdoc />
    public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        _claims.TryRemove((key, ownerToken), out _);
        // A release only ever deletes an in-flight record, which is never cached; forgetting the key anyway costs nothing.
        Forget(key);
        return _inner.ReleaseAsync(key, ownerToken, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken) =>
        _inner.RenewAsync(key, ownerToken, lease, cancellationToken);

    /// <inheritdoc />
    /// <remarks>Always read from the store: reads are for inspection, and inspection wants the authority.</remarks>
    public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken) =>
        _inner.GetAsync(key, cancellationToken);

    /// <inheritdoc />
    /// <remarks>Also drops every expired entry from the cache.</remarks>
    public async ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken)
    {
        var purged = await _inner.PurgeExpiredAsync(maxRecords, cancellationToken).ConfigureAwait(false);
        var now = _timeProvider.GetTimestamp();
        foreach (var pair in _entries)
        {
            if (now >= pair.Value.ExpiresAt)
            {
                Remove(pair.Value);
            }
        }

        return purged;
    }

    /// <inheritdoc />
    /// <remarks>The inner store's health (its own report when it gives one, as the tiered store does): the cache cannot fail.</remarks>
    public ValueTask<IdempotencyHealthResult> CheckHealthAsync(TimeSpan timeout, CancellationToken cancellationToken) =>
        IdempotencyStoreHealth.ProbeAsync(_inner, timeout, cancellationToken);

    /// <inheritdoc />
    public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) =>
        _inner.WaitForChangeAsync(key, observedOwner, timeout, cancellationToken);

    /// <summary>Stops listening for deletions, and disposes the inner store when this cache was registered over it (through the builder).</summary>
    public async ValueTask DisposeAsync()
    {
        if (!StopListening() || !_ownsInner)
        {
            return;
        }

        if (_inner is IAsyncDisposable asyncDisposable)
        {
            await asyncDisposable.DisposeAsync().ConfigureAwait(false);
        }
        else
        {
            (_inner as IDisposable)?.Dispose();
        }
    }

    /// <summary>Stops listening for deletions, and disposes the inner store when this cache was registered over it; prefer <see cref="DisposeAsync"/>.</summary>
    public void Dispose()
    {
        if (!StopListening() || !_ownsInner)
        {
            return;
        }

        (_inner as IDisposable)?.Dispose();
    }

    /// <summary>Ends this cache's use of its store (once: true for the call that did it) and stops listening for deletions.</summary>
    private bool StopListening()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return false;
        }

        _deletions?.Dispose();
        return true;
    }

    private async ValueTask<ClaimResult> AwaitClaimAsync(ValueTask<ClaimResult> pending, ClaimRequest request, long epoch) =>
        OnClaimed(request, await pending.ConfigureAwait(false), epoch);

    private ClaimResult OnClaimed(ClaimRequest request, ClaimResult result, long epoch)
    {
        switch (result.Status)
        {
            case ClaimStatus.Completed when result.Record is { State: IdempotencyRecordState.Completed, Response: not null } completed:
                // The record's expiry is by the store's clock: forget it early by the tolerance, by this node's clock.
                var remaining = completed.ExpiresAt - _timeProvider.GetUtcNow() - _options.StoreClockTolerance;
                if (remaining > TimeSpan.Zero)
                {
                    Insert(request.Key, completed, _timeProvider.GetTimestamp() + ToTimestampTicks(remaining), epoch);
                }

                break;

            case ClaimStatus.Claimed:
                Forget(request.Key); // Expired on this node already; the store agrees the key is free.
                if (_options.CacheCompletions && _claims.Count < MaxTrackedClaims)
                {
                    _claims[(request.Key, request.OwnerToken)] = request.Fingerprint;
                }

                break;
        }

        return result;
    }

    private async ValueTask<bool> CompleteAndCacheAsync(string key, Guid ownerToken, string fingerprint, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        // Taken before the completion is sent: the store starts the retention no earlier than this.
        var sentAt = _timeProvider.GetTimestamp();
        var epoch = Volatile.Read(ref _deletionEpoch);
        var completed = await _inner.CompleteAsync(key, ownerToken, response, retention, cancellationToken).ConfigureAwait(false);
        if (completed)
        {
            // Copied: the response's memory belongs to the caller and may be a pooled buffer reused after this returns.
            var now = _timeProvider.GetUtcNow();
            var record = new IdempotencyRecord
            {
                Key = key,
                State = IdempotencyRecordState.Completed,
                Fingerprint = fingerprint,
                OwnerToken = ownerToken,
                LeaseExpiresAt = now,
                ExpiresAt = now + retention,
                Response = new StoredResponse(response.StatusCode, response.Headers.ToArray(), response.Body.ToArray()) { BodyOmitted = response.BodyOmitted },
            };
            Insert(key, record, sentAt + ToTimestampTicks(retention), epoch);
        }

        return completed;
    }

    private long ToTimestampTicks(TimeSpan span) => (long)(span.TotalSeconds * _timeProvider.TimestampFrequency);

    /// <summary>Caches <paramref name="record"/> unless a deletion was heard since <paramref name="epoch"/> was read.</summary>
    private void Insert(string key, IdempotencyRecord record, long expiresAt, long epoch)
    {
        var size = EstimateBytes(record);
        if (size > _maxEntryBytes || epoch != Volatile.Read(ref _deletionEpoch))
        {
            return;
        }

        var entry = new Entry(key, record, size, expiresAt);
        if (!_entries.TryAdd(key, entry))
        {
            // Another claim cached the same record first (it is the same answer), or an expired entry is still there.
            if (!_entries.TryGetValue(key, out var existing) || _timeProvider.GetTimestamp() < existing.ExpiresAt)
            {
                return;
            }

            Remove(existing);
            if (!_entries.TryAdd(key, entry))
            {
                return;
            }
        }

        Interlocked.Add(ref _bytes, size);
        Interlocked.Increment(ref _count);
        if (epoch != Volatile.Read(ref _deletionEpoch))
        {
            // A deletion arrived while this entry went in: its Forget may have run before the add. The epoch moves before
            // each Forget, so either this sees it or that Forget sees the entry.
            Remove(entry);
            return;
        }

        _clock.Enqueue(entry);
        Interlocked.Increment(ref _queued);
        if (Interlocked.Read(ref _bytes) > _options.MaxBytes || QueueBloated())
        {
            Evict();
        }
    }

    // Entries removed on a lookup or a purge stay in the queue until the hand reaches them; this keeps the queue
    // from growing without bound when entries expire faster than the size bound evicts them.
    private bool QueueBloated() => Volatile.Read(ref _queued) > (2 * Volatile.Read(ref _count)) + 1024;

    /// <summary>One CLOCK sweep on the calling thread; a thread that finds another sweeping goes on without waiting.</summary>
    private void Evict()
    {
        if (Interlocked.CompareExchange(ref _evicting, 1, 0) != 0)
        {
            return;
        }

        try
        {
            var now = _timeProvider.GetTimestamp();
            var budget = (2 * Volatile.Read(ref _queued)) + 16; // Two passes at most: every second chance is used once.
            while (budget-- > 0 && _clock.TryDequeue(out var entry))
            {
                Interlocked.Decrement(ref _queued);
                if (Volatile.Read(ref entry.Removed) != 0)
                {
                    continue;
                }

                var overBudget = Interlocked.Read(ref _bytes) > _options.MaxBytes;
                if (now >= entry.ExpiresAt || (overBudget && entry.Referenced == 0))
                {
                    Remove(entry);
                }
                else
                {
                    if (overBudget)
                    {
                        entry.Referenced = 0; // Its second chance: evicted next time unless replayed meanwhile.
                    }

                    _clock.Enqueue(entry);
                    Interlocked.Increment(ref _queued);
                }

                if (Interlocked.Read(ref _bytes) <= _options.MaxBytes && !QueueBloated())
                {
                    break;
                }
            }
        }
        finally
        {
            Volatile.Write(ref _evicting, 0);
        }
    }

    private void OnDeleted(string key)
    {
        Interlocked.Increment(ref _deletionEpoch);
        Forget(key);
    }

    private void OnDeletionsMissed()
    {
        Interlocked.Increment(ref _deletionEpoch);
        foreach (var pair in _entries)
        {
            Remove(pair.Value);
        }
    }

    /// <summary>
    /// Stops listening for deletions and hands over the inner store without disposing it, for a registration that
    /// replaces this cache with another in front of the same store.
    /// </summary>
    internal IIdempotencyStore Detach()
    {
        StopListening();
        return _inner;
    }

    private void Forget(string key)
    {
        if (_entries.TryGetValue(key, out var entry))
        {
            Remove(entry);
        }
    }

    private void Remove(Entry entry)
    {
        // Only this very entry: a newer one for the same key stays.
        if (_entries.TryRemove(KeyValuePair.Create(entry.Key, entry)))
        {
            Interlocked.Add(ref _bytes, -entry.Size);
            Interlocked.Decrement(ref _count);
        }

        Volatile.Write(ref entry.Removed, 1);
    }

    private static long EstimateBytes(IdempotencyRecord record)
    {
        var response = record.Response!;
        long size = EntryOverheadBytes + (2L * (record.Key.Length + record.Fingerprint.Length)) + response.Body.Length;
        foreach (var header in response.Headers)
        {
            size += 32 + (2L * (header.Key.Length + header.Value.Length));
        }

        return size;
    }

    private sealed class Entry(string key, IdempotencyRecord record, long size, long expiresAt)
    {
        public readonly string Key = key;
        public readonly IdempotencyRecord Record = record;
        public readonly long Size = size;
        public readonly long ExpiresAt = expiresAt;
        public int Referenced;
        public int Removed;
    }
}
