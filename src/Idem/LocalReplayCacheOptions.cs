namespace Idem;

/// <summary>Configures <see cref="LocalReplayCacheStore"/>, a node's in-process cache of completed records.</summary>
public sealed class LocalReplayCacheOptions
{
    /// <summary>
    /// The most the cache may hold, estimated from each record's key, fingerprint, headers and body plus a fixed
    /// overhead per entry. Past it the least recently replayed entries are dropped first (a CLOCK approximation of LRU).
    /// A single record larger than a sixteenth of this is never cached.
    /// </summary>
    /// <value>Default: 16 MiB. Range: 64 KiB to 16 GiB.</value>
    public long MaxBytes { get; set; } = 16L * 1024 * 1024;

    /// <summary>
    /// How far the store's clock may run ahead of this node's. A record read from the store carries its expiry by the
    /// store's clock; the cache forgets it this much earlier by this node's clock, so that it is never replayed past the
    /// retention the store judges. Records completed through this node are timed from the moment their completion was
    /// sent and need no allowance.
    /// </summary>
    /// <value>Default: 1 s. Range: 0 to 1 h.</value>
    public TimeSpan StoreClockTolerance { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// <see langword="true"/> to cache the records this node completes, so that a retry landing on the same node is
    /// answered without a round trip. It costs every new key a copy of its response and an entry that may never be read;
    /// with <see langword="false"/> a record is cached when a claim first finds it completed in the store.
    /// </summary>
    /// <value>Default: <see langword="false"/>.</value>
    public bool CacheCompletions { get; set; }

    /// <summary>Throws when the options cannot work.</summary>
    /// <exception cref="InvalidOperationException">An option is out of range.</exception>
    public void Validate()
    {
        if (MaxBytes < 64 * 1024 || MaxBytes > 16L * 1024 * 1024 * 1024)
        {
            throw new InvalidOperationException($"{nameof(MaxBytes)} must be between 64 KiB and 16 GiB.");
        }

        if (StoreClockTolerance < TimeSpan.Zero || StoreClockTolerance > TimeSpan.FromHours(1))
        {
            throw new InvalidOperationException($"{nameof(StoreClockTolerance)} must be between 0 and 1 hour.");
        }
    }

    internal LocalReplayCacheOptions Clone() => (LocalReplayCacheOptions)MemberwiseClone();
}
