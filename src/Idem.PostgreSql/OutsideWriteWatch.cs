using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Npgsql;

namespace Idem.PostgreSql;

/// <summary>
/// Sees a joined operation's data-modifying commands that run on another connection than its joined transaction's
/// (plain ADO.NET on a second connection, a second DbContext, a repository with its own data source): Npgsql starts an
/// activity per command on its ActivitySource "Npgsql" and tags it with the backend process id of the command's
/// connection (<c>db.npgsql.connection_id</c>), its database, host and text. One listener per process, added with the
/// first PostgreSQL store; it asks for data only while a joined operation runs on the command's flow
/// (<see cref="IdempotentExecution.CurrentJoined"/>), so every other command pays one AsyncLocal read and creates no
/// activity. The command has already run when its activity stops: the write cannot be prevented, only reported, and the
/// operation is refused when it returns (see <see cref="PostgreSqlIdempotencyStore.ThrowIfWrittenOutside"/>).
/// </summary>
internal static class OutsideWriteWatch
{
    private const int MaxKept = 4;
    private static readonly ConditionalWeakTable<IdempotentExecution, ConcurrentQueue<OutsideWrite>> s_writes = new();
    private static ActivityListener? s_listener;

    /// <summary>Off only in the test that shows what the watch prevents.</summary>
    internal static bool Enabled { get; set; } = true;

    public static void Start()
    {
        if (Volatile.Read(ref s_listener) is not null)
        {
            return;
        }

        var listener = new ActivityListener
        {
            ShouldListenTo = static source => source.Name == "Npgsql",
            Sample = static (ref ActivityCreationOptions<ActivityContext> _) => Watching() ? ActivitySamplingResult.AllData : ActivitySamplingResult.None,
            SampleUsingParentId = static (ref ActivityCreationOptions<string> _) => Watching() ? ActivitySamplingResult.AllData : ActivitySamplingResult.None,
            ActivityStopped = OnStopped,
        };
        if (Interlocked.CompareExchange(ref s_listener, listener, null) is null)
        {
            ActivitySource.AddActivityListener(listener);
        }
        else
        {
            listener.Dispose();
        }
    }

    private static bool Watching() => Enabled && IdempotentExecution.CurrentJoined is not null;

    /// <summary>The writes seen outside <paramref name="execution"/>'s joined transaction (at most a few).</summary>
    public static IReadOnlyCollection<OutsideWrite> Seen(IdempotentExecution execution) =>
        s_writes.TryGetValue(execution, out var writes) ? writes : [];

    // Runs on the command's flow (the activity stops in the command's or its reader's completion), so CurrentJoined is
    // the operation's. Never throws: an exception here would surface inside Npgsql's command handling.
    private static void OnStopped(Activity activity)
    {
        if (!Enabled || IdempotentExecution.CurrentJoined is not { } execution || !activity.IsAllDataRequested)
        {
            return;
        }

        if (activity.GetTagItem("db.npgsql.connection_id") is not int processId || activity.GetTagItem("db.query.text") is not string text || !IsDataModifying(text))
        {
            return;
        }

        // The joined transaction's own connection is inside; any connection before the transaction began is outside.
        if (execution.Transaction?.Connection is NpgsqlConnection { ProcessID: var joined } && joined == processId)
        {
            return;
        }

        var writes = s_writes.GetOrAdd(execution, static _ => new ConcurrentQueue<OutsideWrite>());
        if (writes.Count < MaxKept)
        {
            writes.Enqueue(new OutsideWrite(
                activity.GetTagItem("server.address") as string,
                activity.GetTagItem("server.port") as int?,
                activity.GetTagItem("db.namespace") as string,
                processId,
                text));
        }
    }

    /// <summary>
    /// Whether a statement of <paramref name="sql"/> changes data or schema: the first word of a statement is INSERT,
    /// UPDATE, DELETE, MERGE, TRUNCATE, CREATE, ALTER, DROP or CALL, or COPY … FROM (Npgsql traces a binary import as
    /// one), or a WITH query contains INSERT, UPDATE, DELETE or MERGE. A SELECT (FOR UPDATE included) is a read.
    /// </summary>
    internal static bool IsDataModifying(string sql)
    {
        foreach (var statement in sql.Split(';'))
        {
            var words = statement.Split((char[])[' ', '\t', '\r', '\n', '('], StringSplitOptions.RemoveEmptyEntries);
            var first = words.FirstOrDefault(w => !w.StartsWith("--", StringComparison.Ordinal))?.ToUpperInvariant();
            switch (first)
            {
                case "INSERT" or "UPDATE" or "DELETE" or "MERGE" or "TRUNCATE" or "CREATE" or "ALTER" or "DROP" or "CALL":
                    return true;
                case "COPY" when words.Any(w => string.Equals(w, "FROM", StringComparison.OrdinalIgnoreCase)): // an import (COPY … TO is an export)
                    return true;
                case "WITH" when words.Any(w => w.ToUpperInvariant() is "INSERT" or "UPDATE" or "DELETE" or "MERGE"):
                    return true;
            }
        }

        return false;
    }
}

/// <summary>A data-modifying command seen on another connection while a joined operation ran.</summary>
/// <remarks><see cref="Port"/> is tagged only for TCP on a port other than 5432.</remarks>
internal sealed record OutsideWrite(string? Host, int? Port, string? Database, int ProcessId, string Text);
