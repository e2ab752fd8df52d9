using Microsoft.Extensions.Logging;

namespace Idem.PostgreSql;

internal static partial class Log
{
    [LoggerMessage(2101, LogLevel.Debug, "Listening for idempotency key changes on channel {Channel}.", EventName = "PostgreSqlListening")]
    public static partial void Listening(ILogger logger, string channel);

    [LoggerMessage(2102, LogLevel.Warning, "The idempotency listener on channel {Channel} lost its connection; waiters poll until it reconnects in {Delay}.", EventName = "PostgreSqlListenerFailed")]
    public static partial void ListenerFailed(ILogger logger, Exception exception, string channel, TimeSpan delay);
}
