using System.Collections.Concurrent;

namespace Idem;

/// <summary>
/// A store in process memory, for tests and single-process apps that accept losing records on restart.
/// Every step is one compare-and-swap on a concurrent map entry: no global lock.
/// </summary>
public sealed class InMemoryIdempotencyStore : IIdempotencyStore
{
    private readonly ConcurrentDictionary<string, Entry> _records = new(StringComparer.Ordinal);
    private readonly KeyChangeSignals _signals = new();
    private readonly TimeProvider _timeProvider;

    /// <summary>Creates a store on the system clock.</summary>
    public InMemoryIdempotencyStore()
        : this(TimeProvider.System)
    {
    }

    /// <summary>Creates a store that judges leases and retention by <paramref name="timeProvider"/>.</summary>
    public InMemoryIdempotencyStore(TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        _timeProvider = timeProvider;
    }

    /// <summary>The number of records held, expired ones included until purged.</summary>
    public int Count => _records.Count;

    /// <inheritdoc />
    public ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        while (true)
        {
            var now = _timeProvider.GetUtcNow();
            var claim = new Entry
            {
                State = IdempotencyRecordState.InFlight,
                Fingerprint = request.Fingerprint,
                OwnerToken = request.OwnerToken,
                LeaseExpiresAt = now + request.Lease,
                ExpiresAt = now + request.Retention,
            };

            if (!_records.TryGetValue(request.Key, out var existing))
            {
                if (_records.TryAdd(request.Key, claim))
                {
                    return ValueTask.FromResult(ClaimResult.NewClaim);
                }

                continue;
            }

            if (existing.ExpiresAt <= now)
            {
                if (_records.TryUpdate(request.Key, claim, existing))
                {
                    return ValueTask.FromResult(ClaimResult.NewClaim);
                }

                continue;
            }

            if (existing.State == IdempotencyRecordState.Completed)
            {
                return ValueTask.FromResult(new ClaimResult(ClaimStatus.Completed, existing.ToRecord(request.Key)));
            }

            if (existing.LeaseExpiresAt <= now && existing.Fingerprint == request.Fingerprint)
            {
                if (_records.TryUpdate(request.Key, claim, existing))
                {
                    return ValueTask.FromResult(new ClaimResult(ClaimStatus.Claimed, claim.ToRecord(request.Key), TookOver: true));
                }

                continue;
            }

            return ValueTask.FromResult(new ClaimResult(ClaimStatus.InFlight, existing.ToRecord(request.Key)));
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(response);
        cancellationToken.ThrowIfCancellationRequested();
        var payload = Entry.Encode(response);
        while (_records.TryGetValue(key, out var existing) && IsOwnedInFlight(existing, ownerToken))
        {
            var completed = new Entry
            {
                State = IdempotencyRecordState.Completed,
                Fingerprint = existing.Fingerprint,
                OwnerToken = ownerToken,
                LeaseExpiresAt = existing.LeaseExpiresAt,
                ExpiresAt = _timeProvider.GetUtcNow() + retention,
                StatusCode = response.StatusCode,
                BodyOmitted = response.BodyOmitted,
                Payload = payload,
            };

            if (_records.TryUpdate(key, completed, existing))
            {
                _signals.Signal(key);
                return ValueTask.FromResult(true);
            }
        }

        return ValueTask.FromResult(false);
    }

    /// <inheritdoc />
    public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        while (_records.TryGetValue(key, out var existing) && existing.State == IdempotencyRecordState.InFlight && existing.OwnerToken == ownerToken)
        {
            if (_records.TryRemove(new KeyValuePair<string, Entry>(key, existing)))
            {
                _signals.Signal(key);
                return ValueTask.FromResult(true);
            }
        }

        return ValueTask.FromResult(false);
    }

    /// <inheritdoc />
    public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        while (_records.TryGetValue(key, out var existing) && IsOwnedInFlight(existing, ownerToken))
        {
            var renewed = new Entry
            {
                State = IdempotencyRecordState.InFlight,
                Fingerprint = existing.Fingerprint,
                OwnerToken = ownerToken,
                LeaseExpiresAt = _timeProvider.GetUtcNow() + lease,
                ExpiresAt = existing.ExpiresAt,
            };

            if (_records.TryUpdate(key, renewed, existing))
            {
                return ValueTask.FromResult(true);
            }
        }

        return ValueTask.FromResult(false);
    }

    /// <inheritdoc />
    public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(
            _records.TryGetValue(key, out var entry) && entry.ExpiresAt > _timeProvider.GetUtcNow() ? entry.ToRecord(key) : null);
    }

    /// <inheritdoc />
    public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxRecords);
        var now = _timeProvider.GetUtcNow();
        var purged = 0;
        foreach (var entry in _records)
        {
            if (purged >= maxRecords || cancellationToken.IsCancellationRequested)
            {
                break;
            }

            // Conditional removal: a record re-claimed since the scan read it is left alone.
            if (entry.Value.ExpiresAt <= now && _records.TryRemove(entry))
            {
                purged++;
            }
        }

        return ValueTask.FromResult(purged);
    }

    /// <inheritdoc />
    public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) =>
        _signals.WaitAsync(key, ct => ValueTask.FromResult(HasChanged(key, observedOwner)), timeout, _timeProvider, cancellationToken);

    private bool HasChanged(string key, Guid observedOwner)
    {
        var now = _timeProvider.GetUtcNow();
        return !_records.TryGetValue(key, out var record)
            || record.State != IdempotencyRecordState.InFlight
            || record.OwnerToken != observedOwner
            || record.LeaseExpiresAt <= now
            || record.ExpiresAt <= now;
    }

    private bool IsOwnedInFlight(Entry record, Guid ownerToken) =>
        record.State == IdempotencyRecordState.InFlight
        && record.OwnerToken == ownerToken
        && record.ExpiresAt > _timeProvider.GetUtcNow();

    /// <summary>
    /// What the map holds per key, kept for the whole retention: one object plus one array (headers and body encoded
    /// together), an exact copy that never aliases the caller's buffers. Few objects per record keep the garbage
    /// collector's work small when hundreds of thousands of records are retained.
    /// </summary>
    private sealed class Entry
    {
        private long _leaseExpiresTicks;
        private long _expiresTicks;

        // Decoded on the first replay and kept: records that are replayed pay once, the rest stay compact.
        private StoredResponse? _decoded;

        public required IdempotencyRecordState State { get; init; }

        public required string Fingerprint { get; init; }

        public required Guid OwnerToken { get; init; }

        public required DateTimeOffset LeaseExpiresAt
        {
            get => new(_leaseExpiresTicks, TimeSpan.Zero);
            init => _leaseExpiresTicks = value.UtcTicks;
        }

        public required DateTimeOffset ExpiresAt
        {
            get => new(_expiresTicks, TimeSpan.Zero);
            init => _expiresTicks = value.UtcTicks;
        }

        public int StatusCode { get; init; }

        public bool BodyOmitted { get; init; }

        public byte[]? Payload { get; init; }

        public IdempotencyRecord ToRecord(string key) => new()
        {
            Key = key,
            State = State,
            Fingerprint = Fingerprint,
            OwnerToken = OwnerToken,
            LeaseExpiresAt = LeaseExpiresAt,
            ExpiresAt = ExpiresAt,
            Response = State == IdempotencyRecordState.Completed ? _decoded ??= Decode() : null,
        };

        // The headers in the stored form the SQLite store also uses, then the body, in one array.
        public static byte[] Encode(StoredResponse response)
        {
            var payload = ResponseCodec.EncodeHeaders(response.Headers, response.Body.Length, out var headersLength);
            response.Body.Span.CopyTo(payload.AsSpan(headersLength));
            return payload;
        }

        private StoredResponse Decode()
        {
            var payload = Payload!;
            var headers = ResponseCodec.DecodeHeaders(payload, out var bodyOffset);
            return new StoredResponse(StatusCode, headers, payload.AsMemory(bodyOffset)) { BodyOmitted = BodyOmitted };
        }
    }
}
