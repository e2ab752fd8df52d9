using Microsoft.Extensions.Logging;

namespace Idem.AspNetCore;

/// <summary>HTTP events, ids in the 3000s (the core uses 1000s for claims and 2000s for stores).</summary>
internal static partial class Log
{
    [LoggerMessage(3001, LogLevel.Information, "Rejected request {RequestId}: {Detail}", EventName = "RequestRejected")]
    public static partial void RequestRejected(ILogger logger, string requestId, string detail);

    [LoggerMessage(3002, LogLevel.Debug, "Request {RequestId} to {Endpoint} has no idempotency key; passing through.", EventName = "NoKey")]
    public static partial void NoKey(ILogger logger, string requestId, string? endpoint);

    [LoggerMessage(3003, LogLevel.Debug, "Request {RequestId} ended as {Outcome} for {StoreKey}.", EventName = "Outcome")]
    public static partial void Outcome(ILogger logger, string requestId, IdempotencyOutcomeKind outcome, string storeKey);

    [LoggerMessage(3004, LogLevel.Warning, "Request {RequestId} served unprotected: the idempotency store is unavailable and the endpoint fails open.", EventName = "ServedUnprotected")]
    public static partial void ServedUnprotected(ILogger logger, string requestId);

    [LoggerMessage(3005, LogLevel.Information, "The client of request {RequestId} went away; the handler runs on so its response can be stored for the retry.", EventName = "ClientGone")]
    public static partial void ClientGone(ILogger logger, string requestId);

}
