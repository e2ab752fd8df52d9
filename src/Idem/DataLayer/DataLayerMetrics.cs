using System.Diagnostics.Metrics;

namespace Idem;

/// <summary>
/// The data layer's instruments in the <c>Idem</c> meter (<see cref="IdempotencyMetrics.MeterName"/>), shared by
/// Idem.EntityFrameworkCore, Idem.PostgreSql and Idem.Sqlite: <c>idem.data.created</c> and <c>idem.data.found</c>
/// (rows a create-or-get or slug insert returned), <c>idem.data.conflicts</c> (concurrent inserts of the same natural
/// key or slug that were resolved without an error) and <c>idem.data.slug_attempts</c> (insert statements tried for
/// slugs). Each is tagged with the table (<see cref="TableTag"/>), a bounded set fixed by the schema; keys and values
/// never become tags. These are called by the data packages; applications only listen.
/// </summary>
public static class DataLayerMetrics
{
    /// <summary>The table tag's name.</summary>
    public const string TableTag = "idem.table";

    /// <summary>The operation tag's name on <c>idem.data.conflicts</c>: <c>create_or_get</c> or <c>slug</c>.</summary>
    public const string OperationTag = "idem.operation";

    private static readonly Meter Meter = new(IdempotencyMetrics.MeterName);

    private static readonly Counter<long> CreatedRows = Meter.CreateCounter<long>(
        "idem.data.created", unit: "{row}", description: "Rows inserted by create-or-get and unique-slug inserts.");

    private static readonly Counter<long> FoundRows = Meter.CreateCounter<long>(
        "idem.data.found", unit: "{row}", description: "Create-or-get calls that found the row already there.");

    private static readonly Counter<long> Conflicts = Meter.CreateCounter<long>(
        "idem.data.conflicts", unit: "{conflict}", description: "Concurrent inserts of the same natural key or slug resolved without an error, by operation (create_or_get, slug).");

    private static readonly Counter<long> SlugAttempts = Meter.CreateCounter<long>(
        "idem.data.slug_attempts", unit: "{statement}", description: "Insert statements tried to allocate unique slugs.");

    /// <summary>Counts a row inserted into <paramref name="table"/>.</summary>
    public static void Created(string table) => Add(CreatedRows, table);

    /// <summary>Counts a create-or-get on <paramref name="table"/> that found the row.</summary>
    public static void Found(string table) => Add(FoundRows, table);

    /// <summary>Counts a conflict resolved on <paramref name="table"/> by <paramref name="operation"/> (<c>create_or_get</c> or <c>slug</c>).</summary>
    public static void ConflictResolved(string table, string operation)
    {
        if (Conflicts.Enabled)
        {
            Conflicts.Add(1, new KeyValuePair<string, object?>(TableTag, table), new KeyValuePair<string, object?>(OperationTag, operation));
        }
    }

    /// <summary>Counts one insert statement tried for a slug on <paramref name="table"/>.</summary>
    public static void SlugAttempt(string table) => Add(SlugAttempts, table);

    private static void Add(Counter<long> counter, string table)
    {
        if (counter.Enabled)
        {
            counter.Add(1, new KeyValuePair<string, object?>(TableTag, table));
        }
    }
}
