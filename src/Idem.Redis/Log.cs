using Microsoft.Extensions.Logging;

namespace Idem.Redis;

/// <summary>Event ids 2200–2299: the Redis store and response cache.</summary>
internal static partial class Log
{
    [LoggerMessage(2201, LogLevel.Debug, "Subscribed to idempotency key changes on channel {Channel}.", EventName = "RedisSubscribed")]
    public static partial void Subscribed(ILogger logger, string channel);

    [LoggerMessage(2202, LogLevel.Warning, "Could not subscribe to idempotency key changes on channel {Channel}; waiters poll until a later wait subscribes.", EventName = "RedisSubscribeFailed")]
    public static partial void SubscribeFailed(ILogger logger, Exception exception, string channel);

    [LoggerMessage(2203, LogLevel.Debug, "Could not unsubscribe from channel {Channel} while disposing.", EventName = "RedisUnsubscribeFailed")]
    public static partial void UnsubscribeFailed(ILogger logger, Exception exception, string channel);

    [LoggerMessage(2204, LogLevel.Warning, "A claim on key {Key} was acknowledged by {Acknowledged} of {Required} replicas; it was released and reported as a store failure.", EventName = "RedisClaimNotReplicated")]
    public static partial void ClaimNotReplicated(ILogger logger, string key, long acknowledged, int required);

    [LoggerMessage(2205, LogLevel.Warning, "The completion of key {Key} was acknowledged by {Acknowledged} of {Required} replicas; a failover before it replicates can run the key again.", EventName = "RedisCompletionNotReplicated")]
    public static partial void CompletionNotReplicated(ILogger logger, string key, long acknowledged, int required);
}
