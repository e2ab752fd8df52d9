namespace Idem;

/// <summary>Configures <see cref="TieredIdempotencyStore"/>.</summary>
public sealed class TieredIdempotencyStoreOptions
{
    /// <summary>
    /// The longest a cache call may take before the tiered store gives up on it and uses the durable store. Keep it
    /// short: the cache exists to be faster than the durable store.
    /// </summary>
    /// <value>Default: 250 ms. Range: 1 ms to 30 s.</value>
    public TimeSpan CacheTimeout { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// After a cache call failed or timed out, the cache is skipped for this long, so an outage costs one slow call
    /// per period instead of one per request.
    /// </summary>
    /// <value>Default: 5 s. Range: 0 (never skip) to 10 min.</value>
    public TimeSpan CacheBackoff { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The node's in-process cache of completed records in front of the tiered store when it is registered with
    /// <c>WithResponseCache</c> (or <c>WithRedisResponseCache</c>): replays of hot keys are answered from memory, without
    /// a round trip to the response cache or the durable store (<see cref="LocalReplayCacheStore"/>). A record an operator
    /// deletes is forgotten on every node when the durable store's deletion notification arrives
    /// (<see cref="IIdempotencyDeletionNotifier"/>; PostgreSQL's <c>NOTIFY</c>). <see langword="null"/> turns it off.
    /// A <see cref="TieredIdempotencyStore"/> constructed directly has none.
    /// </summary>
    /// <value>Default: on, with <see cref="LocalReplayCacheOptions"/>' defaults (16 MiB).</value>
    public LocalReplayCacheOptions? LocalReplayCache { get; set; } = new();

    /// <summary>Throws when the options cannot work.</summary>
    /// <exception cref="InvalidOperationException">An option is out of range.</exception>
    public void Validate()
    {
        if (CacheTimeout < TimeSpan.FromMilliseconds(1) || CacheTimeout > TimeSpan.FromSeconds(30))
        {
            throw new InvalidOperationException($"{nameof(CacheTimeout)} must be between 1 ms and 30 s.");
        }

        if (CacheBackoff < TimeSpan.Zero || CacheBackoff > TimeSpan.FromMinutes(10))
        {
            throw new InvalidOperationException($"{nameof(CacheBackoff)} must be between 0 and 10 minutes.");
        }

        LocalReplayCache?.Validate();
    }

    internal TieredIdempotencyStoreOptions Clone()
    {
        var copy = (TieredIdempotencyStoreOptions)MemberwiseClone();
        copy.LocalReplayCache = LocalReplayCache?.Clone();
        return copy;
    }
}
