using StackExchange.Redis;

namespace Idem.Redis;

/// <summary>Configures <see cref="RedisIdempotencyStore"/> and <see cref="RedisIdempotencyResponseCache"/>.</summary>
public sealed class RedisIdempotencyStoreOptions
{
    /// <summary>The default <see cref="KeyPrefix"/> of the store.</summary>
    public const string DefaultKeyPrefix = "idem:";

    /// <summary>The default <see cref="KeyPrefix"/> of the response cache; apart from the store's so the two never meet.</summary>
    public const string DefaultCacheKeyPrefix = "idem-cache:";

    /// <summary>
    /// A StackExchange.Redis configuration string (e.g. <c>redis1:6379,redis2:6379,password=…</c>), used when
    /// <see cref="ConnectionMultiplexer"/> is not set; the store then connects and owns its own multiplexer, which fails
    /// commands at once while disconnected (<see cref="BacklogPolicy.FailFast"/>) instead of queueing them.
    /// </summary>
    /// <value>Default: <see langword="null"/>.</value>
    public string? Configuration { get; set; }

    /// <summary>
    /// A multiplexer the application owns and disposes; takes precedence over <see cref="Configuration"/>. Its own
    /// timeouts and backlog policy apply; <see cref="OperationTimeout"/> still bounds every store call.
    /// </summary>
    /// <value>Default: <see langword="null"/>.</value>
    public IConnectionMultiplexer? ConnectionMultiplexer { get; set; }

    /// <summary>
    /// Prepended to every Redis key and to the notification channel (<c>&lt;prefix&gt;changed</c>). Every node sharing
    /// records must use the same prefix. A record's key is <c>&lt;prefix&gt;{&lt;store key&gt;}</c>: the braces are a
    /// Redis Cluster hash tag, so everything kept for one key lands in one slot. Must not contain <c>{</c> or <c>}</c>.
    /// </summary>
    /// <value>Default: <c>idem:</c> (the store), <c>idem-cache:</c> (the response cache).</value>
    public string KeyPrefix { get; set; } = DefaultKeyPrefix;

    /// <summary>
    /// The longest one store call may take. Past it the call throws a <see cref="TimeoutException"/>, so an outage
    /// answers quickly (the executor then fails the request closed with 503) instead of leaving requests hanging.
    /// </summary>
    /// <value>Default: 2 s. Range: 1 ms to 5 min.</value>
    public TimeSpan OperationTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// How many replicas must acknowledge each claim and each completion (Redis <c>WAIT</c>, sent to the key's master
    /// right after the script) before the store reports it. Redis replicates asynchronously: without this a master can
    /// acknowledge a claim and die before its replica has it, and after the failover a second request claims the key
    /// again (a duplicate execution). With it, a claim not acknowledged by this many replicas within
    /// <see cref="ReplicaAcknowledgementTimeout"/> is released and reported as a store failure (the executor answers 503
    /// and the handler does not run); an unacknowledged completion is logged (the response is stored on the master and
    /// the handler already ran, so there is nothing to undo). Set it to the replicas per master (1 in a 3+3 cluster):
    /// <c>WAIT</c> counts replicas that have the write, and only a replica that has it can be promoted without losing it.
    /// </summary>
    /// <value>Default: 0 (no waiting, Redis's asynchronous replication). Range: 0 to 16.</value>
    public int RequiredReplicaAcknowledgements { get; set; }

    /// <summary>How long a claim or completion waits for <see cref="RequiredReplicaAcknowledgements"/>.</summary>
    /// <value>Default: 500 ms. Range: 1 ms to <see cref="OperationTimeout"/>.</value>
    public TimeSpan ReplicaAcknowledgementTimeout { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Throws when the options cannot work.</summary>
    /// <exception cref="InvalidOperationException">An option is missing or out of range.</exception>
    public void Validate()
    {
        if (ConnectionMultiplexer is null && string.IsNullOrWhiteSpace(Configuration))
        {
            throw new InvalidOperationException("Set RedisIdempotencyStoreOptions.Configuration or ConnectionMultiplexer.");
        }

        if (ConnectionMultiplexer is null)
        {
            try
            {
                ConfigurationOptions.Parse(Configuration!);
            }
            catch (ArgumentException ex)
            {
                throw new InvalidOperationException($"RedisIdempotencyStoreOptions.Configuration is not a valid StackExchange.Redis configuration: {ex.Message}", ex);
            }
        }

        if (KeyPrefix is null || KeyPrefix.Length > 200 || KeyPrefix.Contains('{', StringComparison.Ordinal) || KeyPrefix.Contains('}', StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"{nameof(KeyPrefix)} must be at most 200 characters without '{{' or '}}' (the key's hash tag follows it).");
        }

        if (OperationTimeout < TimeSpan.FromMilliseconds(1) || OperationTimeout > TimeSpan.FromMinutes(5))
        {
            throw new InvalidOperationException($"{nameof(OperationTimeout)} must be between 1 ms and 5 minutes.");
        }

        if (RequiredReplicaAcknowledgements is < 0 or > 16)
        {
            throw new InvalidOperationException($"{nameof(RequiredReplicaAcknowledgements)} must be between 0 and 16.");
        }

        if (ReplicaAcknowledgementTimeout < TimeSpan.FromMilliseconds(1) || ReplicaAcknowledgementTimeout > OperationTimeout)
        {
            throw new InvalidOperationException($"{nameof(ReplicaAcknowledgementTimeout)} must be between 1 ms and {nameof(OperationTimeout)}.");
        }
    }

    internal RedisIdempotencyStoreOptions Clone() => (RedisIdempotencyStoreOptions)MemberwiseClone();
}
