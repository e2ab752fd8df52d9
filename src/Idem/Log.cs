using Microsoft.Extensions.Logging;

namespace Idem;

/// <summary>
/// Event ids: 1000s claim and execution (1101-1199 joined transaction and recovery points), 2000s store, 3000s HTTP (in
/// Idem.AspNetCore), except the purge's 3006/3007 (here since the purge moved to core).
/// Store keys are hashes, safe to log; raw client keys and principals never are.
/// </summary>
internal static partial class Log
{
    // 3006/3007 kept the ids they had when the purge lived in Idem.AspNetCore, so existing log filters still match.
    [LoggerMessage(3006, LogLevel.Warning, "Purging expired idempotency records failed.", EventName = "PurgeFailed")]
    public static partial void PurgeFailed(ILogger logger, Exception exception);

    [LoggerMessage(3007, LogLevel.Debug, "Purged {Count} expired idempotency records.", EventName = "Purged")]
    public static partial void Purged(ILogger logger, int count);

    [LoggerMessage(1001, LogLevel.Debug, "Claimed {StoreKey}; executing.", EventName = "Claimed")]
    public static partial void Claimed(ILogger logger, string storeKey);

    [LoggerMessage(1002, LogLevel.Information, "Took over {StoreKey} from an owner whose lease expired.", EventName = "TookOver")]
    public static partial void TookOver(ILogger logger, string storeKey);

    [LoggerMessage(1003, LogLevel.Debug, "Replaying the stored response of {StoreKey} (status {StatusCode}).", EventName = "Replayed")]
    public static partial void Replayed(ILogger logger, string storeKey, int statusCode);

    [LoggerMessage(1004, LogLevel.Information, "{StoreKey} is in flight elsewhere; answering with a conflict.", EventName = "Conflict")]
    public static partial void Conflict(ILogger logger, string storeKey);

    [LoggerMessage(1005, LogLevel.Information, "{StoreKey} was used with another request fingerprint.", EventName = "FingerprintMismatch")]
    public static partial void FingerprintMismatch(ILogger logger, string storeKey);

    [LoggerMessage(1006, LogLevel.Debug, "Released {StoreKey} after status {StatusCode}; a retry will execute again.", EventName = "ReleasedAfterStatus")]
    public static partial void ReleasedAfterStatus(ILogger logger, string storeKey, int statusCode);

    [LoggerMessage(1007, LogLevel.Warning, "The operation for {StoreKey} failed; released the key so a retry executes again.", EventName = "ReleasedAfterFailure")]
    public static partial void ReleasedAfterFailure(ILogger logger, Exception exception, string storeKey);

    [LoggerMessage(1008, LogLevel.Warning, "Completion of {StoreKey} was refused: this owner lost its claim to a newer one.", EventName = "CompletionFenced")]
    public static partial void CompletionFenced(ILogger logger, string storeKey);

    [LoggerMessage(1009, LogLevel.Warning, "Lost the lease on {StoreKey}; cancelling the operation.", EventName = "LeaseLost")]
    public static partial void LeaseLost(ILogger logger, Exception? exception, string storeKey);

    [LoggerMessage(1010, LogLevel.Information, "The response of {StoreKey} exceeds the stored-body limit of {Limit} bytes; recorded as done without its body.", EventName = "BodyOmitted")]
    public static partial void BodyOmitted(ILogger logger, string storeKey, int limit);

    [LoggerMessage(1101, LogLevel.Warning, "The owner of {StoreKey} lost it to a newer owner while it worked; its joined transaction was rolled back and the caller is answered as a duplicate.", EventName = "StaleOwnerRolledBack")]
    public static partial void StaleOwnerRolledBack(ILogger logger, string storeKey);

    [LoggerMessage(1102, LogLevel.Error, "The joined transaction of {StoreKey} failed to commit; rolled back and released the key, answering 503.", EventName = "JoinedCommitFailed")]
    public static partial void JoinedCommitFailed(ILogger logger, Exception exception, string storeKey);

    [LoggerMessage(1103, LogLevel.Information, "Resuming {StoreKey}: phase {Phase} was finished by an earlier owner; skipped, its recorded result returned.", EventName = "PhaseSkipped")]
    public static partial void PhaseSkipped(ILogger logger, string storeKey, string phase);

    [LoggerMessage(1104, LogLevel.Debug, "Recorded phase {Phase} of {StoreKey}.", EventName = "PhaseRecorded")]
    public static partial void PhaseRecorded(ILogger logger, string storeKey, string phase);

    [LoggerMessage(2001, LogLevel.Error, "The idempotency store failed during {Operation} of {StoreKey}.", EventName = "StoreFailed")]
    public static partial void StoreFailed(ILogger logger, Exception exception, string operation, string storeKey);

    [LoggerMessage(2002, LogLevel.Warning, "The idempotency store is unavailable; running {StoreKey} UNPROTECTED because the policy fails open.", EventName = "ExecutingUnprotected")]
    public static partial void ExecutingUnprotected(ILogger logger, string storeKey);

    [LoggerMessage(2011, LogLevel.Warning, "The idempotency response cache failed during {Operation}; using the durable store alone for {Backoff}.", EventName = "ResponseCacheFailed")]
    public static partial void ResponseCacheFailed(ILogger logger, Exception exception, string operation, TimeSpan backoff);
}
