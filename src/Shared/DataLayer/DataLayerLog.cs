// Shared source (see DataLayerSql.cs). Event ids 6000–6099: the data layer (create-or-get, unique slugs).
using Microsoft.Extensions.Logging;

namespace Idem.DataLayer;

internal static partial class DataLayerLog
{
    [LoggerMessage(6001, LogLevel.Debug, "Create-or-get on {Table}: a concurrent insert of the same natural key won; returned its row.", EventName = "CreateOrGetConflictResolved")]
    public static partial void ConflictResolved(ILogger logger, string table);

    [LoggerMessage(6002, LogLevel.Debug, "Unique slug on {Table}: the candidate for '{BaseSlug}' was taken by a concurrent insert on attempt {Attempt}; trying the next.", EventName = "SlugCandidateTaken")]
    public static partial void SlugTaken(ILogger logger, string table, string baseSlug, int attempt);

    [LoggerMessage(6003, LogLevel.Warning, "Unique slug on {Table}: no free slug for '{BaseSlug}' after {Attempts} attempts; nothing was inserted.", EventName = "SlugExhausted")]
    public static partial void SlugExhausted(ILogger logger, string table, string baseSlug, int attempts);
}
