using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Idem;

/// <summary>
/// A store in process memory, for tests and single-process apps that accept losing records on restart.
/// Keys are spread over 64 shards, each with its own short lock that is never held across an await: no global lock.
/// </summary>
/// <remarks>
/// Records are kept for their whole retention, so a busy API holds hundreds of thousands of them. Each shard therefore
/// keeps its records as plain structs in a <see cref="RecordTable{TValue}"/> and their bytes (key, fingerprint, response)
/// in a <see cref="ByteArena"/>: a retained record costs the garbage collector nothing, where one object graph per record
/// made every collection trace and copy them all. The table decides that a key is new without reading any record, so a
/// new key touches no cold memory however many are retained. Space is reclaimed as records expire and are purged.
/// </remarks>
public sealed class InMemoryIdempotencyStore : IRecoveryPointStore
{
    private const int ShardCount = 64;

    private readonly Shard[] _shards = new Shard[ShardCount];
    private readonly KeyChangeSignals _signals = new();
    private readonly TimeProvider _timeProvider;
    private int _nextPurgeShard;

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
        for (var i = 0; i < _shards.Length; i++)
        {
            _shards[i] = new Shard();
        }
    }

    /// <summary>The number of records held, expired ones included until purged.</summary>
    public int Count => (int)SumOverShards(static shard => shard.Records.Count);

    /// <summary>The bytes the store's arenas hold, free space included; for tests and diagnostics.</summary>
    internal long ArenaBytes => SumOverShards(static shard => shard.Arena.ChunkBytes);

    /// <inheritdoc />
    public ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request.Key);
        ArgumentNullException.ThrowIfNull(request.Fingerprint);
        cancellationToken.ThrowIfCancellationRequested();
        var now = _timeProvider.GetUtcNow();
        var leaseExpires = (now + request.Lease).UtcTicks;
        var expires = (now + request.Retention).UtcTicks;
        var shard = ShardFor(request.Key, out var hashed);
        lock (shard.Gate)
        {
            ref var slot = ref shard.Records.GetValueRefOrAddDefault(hashed.Key, hashed.Hash, out var exists);
            if (!exists || slot.ExpiresTicks <= now.UtcTicks)
            {
                shard.Clear(ref slot);
                shard.Phases?.Remove(request.Key);
                shard.Claim(ref slot, request, leaseExpires, expires);
                return ValueTask.FromResult(ClaimResult.NewClaim);
            }

            if (slot.State == SlotState.Completed)
            {
                return ValueTask.FromResult(new ClaimResult(ClaimStatus.Completed, shard.ToRecord(hashed, in slot)));
            }

            if (slot.LeaseExpiresTicks <= now.UtcTicks && shard.HasFingerprint(in slot, request.Fingerprint))
            {
                slot.Owner = request.OwnerToken;
                slot.LeaseExpiresTicks = leaseExpires;
                slot.ExpiresTicks = expires;
                return ValueTask.FromResult(new ClaimResult(ClaimStatus.Claimed, shard.ToRecord(hashed, in slot), TookOver: true));
            }

            return ValueTask.FromResult(new ClaimResult(ClaimStatus.InFlight, shard.ToRecord(hashed, in slot)));
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);
        cancellationToken.ThrowIfCancellationRequested();
        var now = _timeProvider.GetUtcNow();
        var expires = (now + retention).UtcTicks;
        var headersLength = ResponseCodec.GetCompactLength(response.Headers, out var asciiHeaders);
        var shard = ShardFor(key, out var hashed);
        lock (shard.Gate)
        {
            ref var slot = ref shard.Records.GetValueRefOrNullRef(hashed.Key, hashed.Hash);
            if (Unsafe.IsNullRef(ref slot) || !IsOwnedInFlight(in slot, ownerToken, now.UtcTicks))
            {
                return ValueTask.FromResult(false);
            }

            // Headers then body in one run: an exact copy that never aliases the caller's buffers.
            slot.Payload = shard.Arena.Allocate(headersLength + response.Body.Length, out var destination);
            ResponseCodec.WriteCompact(response.Headers, asciiHeaders, destination);
            response.Body.Span.CopyTo(destination[headersLength..]);
            slot.State = SlotState.Completed;
            shard.Phases?.Remove(key);
            slot.StatusCode = response.StatusCode;
            slot.BodyOmitted = response.BodyOmitted;
            slot.ExpiresTicks = expires;
        }

        _signals.Signal(key);
        return ValueTask.FromResult(true);
    }

    /// <inheritdoc />
    public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        var shard = ShardFor(key, out var hashed);
        lock (shard.Gate)
        {
            ref var slot = ref shard.Records.GetValueRefOrNullRef(hashed.Key, hashed.Hash);
            if (Unsafe.IsNullRef(ref slot) || slot.State != SlotState.InFlight || slot.Owner != ownerToken)
            {
                return ValueTask.FromResult(false);
            }

            if (shard.Phases?.ContainsKey(key) == true)
            {
                // Finished phases must never run again: the record stays, its lease ended, for the retry to take over.
                slot.LeaseExpiresTicks = _timeProvider.GetUtcNow().UtcTicks;
            }
            else
            {
                shard.Remove(hashed);
            }
        }

        _signals.Signal(key);
        return ValueTask.FromResult(true);
    }

    /// <inheritdoc />
    public ValueTask<bool> RecordPhasesAsync(string key, Guid ownerToken, ReadOnlyMemory<byte> phases, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        var now = _timeProvider.GetUtcNow().UtcTicks;
        var copy = phases.ToArray();
        var shard = ShardFor(key, out var hashed);
        lock (shard.Gate)
        {
            ref var slot = ref shard.Records.GetValueRefOrNullRef(hashed.Key, hashed.Hash);
            if (Unsafe.IsNullRef(ref slot) || !IsOwnedInFlight(in slot, ownerToken, now))
            {
                return ValueTask.FromResult(false);
            }

            (shard.Phases ??= new Dictionary<string, byte[]>(StringComparer.Ordinal))[key] = copy;
            return ValueTask.FromResult(true);
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        var now = _timeProvider.GetUtcNow();
        var leaseExpires = (now + lease).UtcTicks;
        var shard = ShardFor(key, out var hashed);
        lock (shard.Gate)
        {
            ref var slot = ref shard.Records.GetValueRefOrNullRef(hashed.Key, hashed.Hash);
            if (Unsafe.IsNullRef(ref slot) || !IsOwnedInFlight(in slot, ownerToken, now.UtcTicks))
            {
                return ValueTask.FromResult(false);
            }

            slot.LeaseExpiresTicks = leaseExpires;
            return ValueTask.FromResult(true);
        }
    }

    /// <inheritdoc />
    public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        var now = _timeProvider.GetUtcNow().UtcTicks;
        var shard = ShardFor(key, out var hashed);
        lock (shard.Gate)
        {
            ref var slot = ref shard.Records.GetValueRefOrNullRef(hashed.Key, hashed.Hash);
            return ValueTask.FromResult(
                Unsafe.IsNullRef(ref slot) || slot.ExpiresTicks <= now ? null : shard.ToRecord(hashed, in slot));
        }
    }

    /// <inheritdoc />
    public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxRecords);
        var now = _timeProvider.GetUtcNow().UtcTicks;
        var purged = 0;

        // Each call starts one shard further on, so a small budget does not always drain the same shards.
        var start = (int)((uint)Interlocked.Increment(ref _nextPurgeShard) % ShardCount);
        for (var i = 0; i < ShardCount && purged < maxRecords && !cancellationToken.IsCancellationRequested; i++)
        {
            var shard = _shards[(start + i) % ShardCount];
            lock (shard.Gate)
            {
                purged += shard.PurgeExpired(now, maxRecords - purged);
                shard.ForgetPhasesOfRemovedKeys();
            }
        }

        return ValueTask.FromResult(purged);
    }

    /// <inheritdoc />
    public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) =>
        _signals.WaitAsync(key, ct => ValueTask.FromResult(HasChanged(key, observedOwner)), timeout, _timeProvider, cancellationToken);

    private long SumOverShards(Func<Shard, long> measure)
    {
        long total = 0;
        foreach (var shard in _shards)
        {
            lock (shard.Gate)
            {
                total += measure(shard);
            }
        }

        return total;
    }

    private static bool IsOwnedInFlight(in Slot slot, Guid ownerToken, long nowTicks) =>
        slot.State == SlotState.InFlight && slot.Owner == ownerToken && slot.ExpiresTicks > nowTicks;

    // The key is hashed once per operation: the hash picks the shard and is handed to the shard's table with the key.
    private Shard ShardFor(string key, out HashedKey hashed)
    {
        hashed = new HashedKey(key, key.GetHashCode(StringComparison.Ordinal));
        return _shards[hashed.Hash & (ShardCount - 1)];
    }

    private bool HasChanged(string key, Guid observedOwner)
    {
        var now = _timeProvider.GetUtcNow().UtcTicks;
        var shard = ShardFor(key, out var hashed);
        lock (shard.Gate)
        {
            ref var slot = ref shard.Records.GetValueRefOrNullRef(hashed.Key, hashed.Hash);
            return Unsafe.IsNullRef(ref slot)
                || slot.State != SlotState.InFlight
                || slot.Owner != observedOwner
                || slot.LeaseExpiresTicks <= now
                || slot.ExpiresTicks <= now;
        }
    }

    /// <summary>
    /// A record as the shard table holds it: no references, so the table is one array the collector never scans,
    /// and 68 bytes, since a busy store holds hundreds of thousands of them for their whole retention.
    /// </summary>
    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    private struct Slot
    {
        public long LeaseExpiresTicks;
        public long ExpiresTicks;
        public Guid Owner;
        public ArenaText Fingerprint;
        public ArenaSpan Payload;
        public int StatusCode;
        public SlotState State;
        public bool BodyOmitted;
    }

    /// <summary><see cref="IdempotencyRecordState"/> in one byte; a default slot is <see cref="Free"/>.</summary>
    private enum SlotState : byte
    {
        Free = 0,
        InFlight = (byte)IdempotencyRecordState.InFlight,
        Completed = (byte)IdempotencyRecordState.Completed,
    }

    private sealed class Shard
    {
        public Shard()
        {
            Records = new RecordTable<Slot>(Arena);
        }

        // Replays of a hot key (a client's retry loop, a double-click) reuse the record built for the first one, so they
        // allocate nothing. A few recent ones per shard are enough for that, and bound what the cache holds on to.
        private const int RecentReplayCount = 8;

        private readonly IdempotencyRecord?[] _recentReplays = new IdempotencyRecord?[RecentReplayCount];

        public Lock Gate { get; } = new();

        public ByteArena Arena { get; } = new();

        public RecordTable<Slot> Records { get; }

        /// <summary>Recovery points of in-flight keys, by key; rare, so kept beside the table rather than in every slot.</summary>
        public Dictionary<string, byte[]>? Phases { get; set; }

        public void ForgetPhasesOfRemovedKeys()
        {
            if (Phases is not { Count: > 0 } phases)
            {
                return;
            }

            List<string>? gone = null;
            foreach (var key in phases.Keys)
            {
                if (Unsafe.IsNullRef(ref Records.GetValueRefOrNullRef(key, key.GetHashCode(StringComparison.Ordinal))))
                {
                    (gone ??= []).Add(key);
                }
            }

            foreach (var key in gone ?? [])
            {
                phases.Remove(key);
            }
        }

        /// <summary>Frees what a slot held and empties it for reuse; a new slot (all defaults) holds nothing.</summary>
        public void Clear(ref Slot slot)
        {
            if (slot.State != SlotState.Free)
            {
                FreeBytes(in slot);
                ForgetRecentReplays();
            }

            slot = default;
        }

        public void Claim(ref Slot slot, ClaimRequest request, long leaseExpiresTicks, long expiresTicks)
        {
            slot.Fingerprint = ArenaText.Write(Arena, request.Fingerprint);
            slot.Owner = request.OwnerToken;
            slot.LeaseExpiresTicks = leaseExpiresTicks;
            slot.ExpiresTicks = expiresTicks;
            slot.State = SlotState.InFlight;
        }

        public bool HasFingerprint(in Slot slot, string fingerprint) => slot.Fingerprint.Equals(Arena, fingerprint);

        public void Remove(HashedKey key)
        {
            // The table frees the key's characters; the record's own bytes are freed here.
            Phases?.Remove(key.Key);
            if (Records.Remove(key.Key, key.Hash, out var slot))
            {
                FreeBytes(in slot);
                ForgetRecentReplays();
            }
        }

        public int PurgeExpired(long nowTicks, int max)
        {
            var purged = 0;
            for (var index = 0; index < Records.HighWater && purged < max; index++)
            {
                if (!Records.IsLive(index))
                {
                    continue;
                }

                ref var slot = ref Records.ValueAt(index);
                if (slot.ExpiresTicks <= nowTicks)
                {
                    FreeBytes(in slot); // before the removal empties the entry
                    Records.RemoveAt(index);
                    purged++;
                }
            }

            if (purged > 0)
            {
                ForgetRecentReplays();
            }

            return purged;
        }

        public IdempotencyRecord ToRecord(HashedKey key, in Slot slot)
        {
            // The owner token is unique to a claim, so a cached record with the same key and owner is this record.
            ref var recent = ref _recentReplays[(uint)key.Hash / ShardCount % RecentReplayCount];
            if (slot.State == SlotState.Completed && recent is { } cached && cached.OwnerToken == slot.Owner && cached.Key == key.Key)
            {
                return cached;
            }

            var record = new IdempotencyRecord
            {
                Key = key.Key,
                State = (IdempotencyRecordState)slot.State,
                Fingerprint = slot.Fingerprint.ToString(Arena),
                OwnerToken = slot.Owner,
                LeaseExpiresAt = new DateTimeOffset(slot.LeaseExpiresTicks, TimeSpan.Zero),
                ExpiresAt = new DateTimeOffset(slot.ExpiresTicks, TimeSpan.Zero),
                Response = slot.State == SlotState.Completed ? DecodeResponse(in slot) : null,
                Phases = slot.State == SlotState.InFlight && Phases is not null && Phases.TryGetValue(key.Key, out var phases) ? phases : default,
            };

            if (slot.State == SlotState.Completed)
            {
                recent = record;
            }

            return record;
        }

        private StoredResponse DecodeResponse(in Slot slot)
        {
            // The body is read in place: arena runs are never overwritten, and a dropped chunk lives on while referenced.
            var payload = Arena.ReadMemory(slot.Payload);
            var headers = ResponseCodec.DecodeHeaders(payload.Span, out var bodyOffset);
            return new StoredResponse(slot.StatusCode, headers, payload[bodyOffset..]) { BodyOmitted = slot.BodyOmitted };
        }

        // Records the cache holds may point into chunks their removal lets go; dropping them all is cheap and rare.
        private void ForgetRecentReplays() => Array.Clear(_recentReplays);

        // A record's own bytes (fingerprint, response) go back to the arena; the table frees its key.
        private void FreeBytes(in Slot slot)
        {
            Arena.Free(slot.Fingerprint.Span);
            Arena.Free(slot.Payload);
        }
    }

    /// <summary>A caller's key with its hash, computed once per operation.</summary>
    private readonly record struct HashedKey(string Key, int Hash);
}
