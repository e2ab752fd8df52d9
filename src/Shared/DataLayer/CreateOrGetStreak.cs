// Shared source (see DataLayerSql.cs): which statement a PostgreSQL create-or-get sends first, for the ADO.NET helpers
// and EF Core alike.
namespace Idem.DataLayer;

/// <summary>Which statement a PostgreSQL create-or-get sends first (see <see cref="CreateOrGetStreak"/>).</summary>
internal enum CreateOrGetFirst
{
    /// <summary>The one statement that reads and, only when it found nothing, inserts.</summary>
    Combined,

    /// <summary>The plain read by key; on a miss, the combined statement.</summary>
    Read,

    /// <summary><c>INSERT … ON CONFLICT DO NOTHING RETURNING</c>; when it inserted nothing, the read.</summary>
    Insert,
}

/// <summary>
/// Picks a PostgreSQL create-or-get's first statement from the recent calls of its definition. The combined statement
/// answers a new and an existing row in one round trip, but costs more than either half alone: its insert is planned and
/// started even when the read found the row (every node of a plan is initialised before it runs), and its read runs even
/// before an insert that will succeed. After <see cref="Length"/> calls that all found their row, the next sends the
/// plain read first (an existing row then costs exactly a <c>SELECT</c>; a new one a read, then the combined statement);
/// after as many that all created theirs, the plain insert (a new row costs exactly an <c>INSERT … ON CONFLICT DO
/// NOTHING RETURNING</c>; an existing one that insert, then a read). One call that breaks the streak sends the next back
/// to the combined statement, so a mixed workload keeps one round trip per call. Every path is conflict-safe on its own:
/// the unique index decides, the reads are only shortcuts.
/// </summary>
internal sealed class CreateOrGetStreak
{
    /// <summary>How many consecutive calls must have found (or created) their row before the next changes its first statement.</summary>
    public const int Length = 4;

    // > 0: how many consecutive calls found their row; < 0: created it; capped at ±Length so that a steady workload
    // stops writing it. Read and written without a lock by concurrent calls: it only picks a statement, never an
    // answer, so a lost update costs at most one round trip.
    private int _run;

    /// <summary>The next call's first statement.</summary>
    public CreateOrGetFirst First
    {
        get
        {
            var run = Volatile.Read(ref _run);
            return run >= Length ? CreateOrGetFirst.Read : run <= -Length ? CreateOrGetFirst.Insert : CreateOrGetFirst.Combined;
        }
    }

    /// <summary>Counts a call's outcome toward the streak.</summary>
    public void Observe(bool created)
    {
        var run = Volatile.Read(ref _run);
        var next = created ? (run < 0 ? Math.Max(run - 1, -Length) : -1) : (run > 0 ? Math.Min(run + 1, Length) : 1);
        if (next != run)
        {
            Volatile.Write(ref _run, next);
        }
    }
}
