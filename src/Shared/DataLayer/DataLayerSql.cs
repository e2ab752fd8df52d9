// Shared source, compiled into Idem.EntityFrameworkCore, Idem.PostgreSql and Idem.Sqlite as an internal type: the SQL of
// create-or-get and of unique-slug inserts for both databases. Identifiers are always quoted here, never concatenated raw.
using System.Globalization;
using System.Text;

namespace Idem.DataLayer;

internal enum SqlDialect
{
    PostgreSql,
    Sqlite,
}

internal static class DataLayerSql
{
    /// <summary>The parameter names of the inserted values: @p0, @p1…</summary>
    public static string ValueParameter(int index) => "@p" + index.ToString(CultureInfo.InvariantCulture);

    public const string BaseParameter = "@idem_base";
    public const string MaxLengthParameter = "@idem_max";
    public const string PatternParameter = "@idem_pattern";
    public const string OffsetParameter = "@idem_offset";

    public static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    public static string Table(string table, string? schema) => schema is null ? Quote(table) : Quote(schema) + "." + Quote(table);

    private static string List(IReadOnlyList<string> columns, string? alias = null)
    {
        var prefix = alias is null ? string.Empty : alias + ".";
        return string.Join(", ", columns.Select(c => prefix + Quote(c)));
    }

    private static string KeyPredicate(IReadOnlyList<string> keyColumns, IReadOnlyList<int> keyOrdinals) =>
        string.Join(" AND ", keyColumns.Select((c, i) => Quote(c) + " = " + ValueParameter(keyOrdinals[i])));

    /// <summary>The plain insert: <c>INSERT … ON CONFLICT (key) DO NOTHING RETURNING …</c>, no row when the key exists.</summary>
    public static string InsertOrNothing(string table, IReadOnlyList<string> columns, IReadOnlyList<string> keyColumns, IReadOnlyList<string> returning) =>
        new StringBuilder()
            .Append("INSERT INTO ").Append(table).Append(" (").Append(List(columns)).Append(") VALUES (")
            .Append(string.Join(", ", columns.Select((_, i) => ValueParameter(i))))
            .Append(") ON CONFLICT (").Append(List(keyColumns)).Append(") DO NOTHING RETURNING ").Append(List(returning))
            .ToString();

    /// <summary>
    /// The ADO.NET create-or-get. On PostgreSQL one statement reads the row by its key and, only when it found none,
    /// inserts with <c>ON CONFLICT (key) DO NOTHING</c> (data-modifying CTEs); the row's last column says whether it was
    /// inserted. An existing row so costs an index lookup: no insert attempt, no identity value drawn, no speculative
    /// insertion, which an insert-first statement pays on every hit. The read is a shortcut, never the decision: the
    /// insert after it still only inserts what the unique index lets through. Both see the statement's snapshot, so a
    /// row committed by a concurrent insert after the statement began (the conflict that made the insert wait) is in
    /// neither: then the statement returns nothing and <see cref="Read"/> runs once.
    /// On SQLite it is <see cref="InsertOrNothing"/>, with <see cref="Read"/> before it (outside a transaction) or after it.
    /// On PostgreSQL a definition whose recent calls all found (or all created) their row sends <see cref="Read"/> (or
    /// <see cref="InsertOrNothing"/>) first instead (<see cref="CreateOrGetStreak"/>).
    /// </summary>
    public static string CreateOrGet(SqlDialect dialect, string table, IReadOnlyList<string> columns, IReadOnlyList<string> keyColumns, IReadOnlyList<int> keyOrdinals, IReadOnlyList<string> returning)
    {
        if (dialect == SqlDialect.Sqlite)
        {
            return InsertOrNothing(table, columns, keyColumns, returning);
        }

        return new StringBuilder()
            .Append(FoundThenInserted(table, columns, keyColumns, keyOrdinals, returning))
            .Append(" SELECT ").Append(List(returning)).Append(", FALSE FROM idem_found")
            .Append(" UNION ALL SELECT ").Append(List(returning)).Append(", TRUE FROM idem_inserted")
            .ToString();
    }

    /// <summary>
    /// EF Core's create-or-get on PostgreSQL, one statement as <see cref="CreateOrGet"/> but with the entity's columns only
    /// (EF Core materialises entities, not an extra "created" column): an inserted row comes back twice, an existing one
    /// once, so the count of rows says which it was. No row: a concurrent insert committed after the snapshot, read again.
    /// </summary>
    public static string CreateOrGetRows(string table, IReadOnlyList<string> columns, IReadOnlyList<string> keyColumns, IReadOnlyList<int> keyOrdinals, IReadOnlyList<string> returning) =>
        new StringBuilder()
            .Append(FoundThenInserted(table, columns, keyColumns, keyOrdinals, returning))
            .Append(" SELECT ").Append(List(returning)).Append(" FROM idem_found")
            .Append(" UNION ALL SELECT ").Append(List(returning)).Append(" FROM idem_inserted")
            .Append(" UNION ALL SELECT ").Append(List(returning)).Append(" FROM idem_inserted")
            .ToString();

    /// <summary>
    /// <c>WITH idem_found AS (the read by key), idem_inserted AS (INSERT … SELECT values WHERE NOT EXISTS (SELECT 1 FROM
    /// idem_found) ON CONFLICT (key) DO NOTHING RETURNING …)</c>: the insert runs only when the read found nothing (the
    /// one-time filter is evaluated before any row is formed, so an existing row draws no identity value).
    /// </summary>
    private static string FoundThenInserted(string table, IReadOnlyList<string> columns, IReadOnlyList<string> keyColumns, IReadOnlyList<int> keyOrdinals, IReadOnlyList<string> returning) =>
        new StringBuilder()
            .Append("WITH idem_found AS (SELECT ").Append(List(returning)).Append(" FROM ").Append(table)
            .Append(" WHERE ").Append(KeyPredicate(keyColumns, keyOrdinals)).Append(')')
            .Append(", idem_inserted AS (INSERT INTO ").Append(table).Append(" (").Append(List(columns)).Append(") SELECT ")
            .Append(string.Join(", ", columns.Select((_, i) => ValueParameter(i))))
            .Append(" WHERE NOT EXISTS (SELECT 1 FROM idem_found) ON CONFLICT (").Append(List(keyColumns)).Append(") DO NOTHING RETURNING ").Append(List(returning)).Append(')')
            .ToString();

    /// <summary>The read by natural key, after an insert that met an existing row; with a FALSE "created" column when asked.</summary>
    public static string Read(string table, IReadOnlyList<string> keyColumns, IReadOnlyList<int> keyOrdinals, IReadOnlyList<string> returning, bool createdColumn) =>
        "SELECT " + List(returning) + (createdColumn ? ", FALSE" : string.Empty) + " FROM " + table +
        " WHERE " + KeyPredicate(keyColumns, keyOrdinals);

    /// <summary>
    /// How many candidates one PostgreSQL slug statement tries, one after the other, before it gives up: contenders that
    /// read the same largest suffix queue on the unique index for the first candidate, and each loser moves on to the next
    /// in the same statement instead of a new round trip.
    /// </summary>
    public const int PostgreSqlSlugCandidates = 8;

    /// <summary>
    /// One statement that picks the slug and inserts the row: the base slug when it is free, otherwise the base (cut so the
    /// suffix fits) with the largest numeric suffix in use plus one plus <see cref="OffsetParameter"/>. The unique index
    /// decides: a candidate a concurrent insert took makes the insert do nothing (ON CONFLICT on the slug only).
    /// On SQLite (one writer at a time, so the statement sees every committed slug) one candidate per statement.
    /// On PostgreSQL the statement chains <see cref="PostgreSqlSlugCandidates"/> data-modifying CTEs, each inserting the
    /// next candidate only when every earlier one inserted nothing: the contenders of one snapshot (which all read the same
    /// largest suffix) wait on the unique index for the first candidate's winner, then go on to the next in the same
    /// statement. When every candidate was taken the statement returns nothing and the caller tries again with a wider
    /// offset. Other constraints' violations reach the caller untouched.
    /// The suffix test mirrors <see cref="Slug.WithSuffix"/>: a row counts when it is the base cut to
    /// (max length - 1 - its digits), trimmed of trailing dashes, then a dash and 1 to 18 digits.
    /// </summary>
    public static string InsertWithSlug(SqlDialect dialect, string table, string slugColumn, IReadOnlyList<string> columns, IReadOnlyList<string> returning)
    {
        var slug = Quote(slugColumn);
        var integer = dialect == SqlDialect.PostgreSql ? "bigint" : "INTEGER";
        var digits = $"(length(s.{slug}) - length(rtrim(s.{slug}, '0123456789')))";
        var headLength = $"{MaxLengthParameter} - 1 - {digits}";
        // The rows that can carry a suffix start with the pattern. SQLite: LIKE 'prefix%'. PostgreSQL: a byte-order range
        // [prefix, prefix || '~') (a counted slug is the prefix then [a-z0-9-], all below '~'), which a prepared
        // statement's generic plan can still answer from a COLLATE "C" index; LIKE with a parameter cannot, so every call
        // would be planned again.
        var candidates = dialect == SqlDialect.Sqlite
            ? $"s.{slug} LIKE {PatternParameter} ESCAPE '\\'"
            : $"s.{slug} COLLATE \"C\" >= {PatternParameter} AND s.{slug} COLLATE \"C\" < {PatternParameter} || '~'";
        var largest = $"(SELECT coalesce(max(CAST(substr(s.{slug}, length(rtrim(s.{slug}, '0123456789')) + 1) AS {integer})), 0) FROM {table} AS s" +
            $" WHERE {candidates} AND {digits} BETWEEN 1 AND {Slug.MaxSuffixDigits}" +
            $" AND rtrim(s.{slug}, '0123456789') = rtrim(substr({BaseParameter}, 1, CASE WHEN {headLength} > 0 THEN {headLength} ELSE 0 END), '-') || '-')";
        var baseFree = $"{OffsetParameter} = 0 AND NOT EXISTS (SELECT 1 FROM {table} WHERE {slug} = {BaseParameter})";
        string Candidate(string suffix) =>
            $"CASE WHEN {suffix} = 0 THEN {BaseParameter} ELSE rtrim(substr({BaseParameter}, 1, {MaxLengthParameter} - 1 - length(CAST({suffix} AS TEXT))), '-') || '-' || CAST({suffix} AS TEXT) END";
        var values = string.Concat(columns.Select((_, i) => ValueParameter(i) + ", "));
        var insertInto = "INSERT INTO " + table + " (" + (columns.Count > 0 ? List(columns) + ", " : string.Empty) + slug + ") ";
        var onConflict = " ON CONFLICT (" + slug + ") DO NOTHING RETURNING " + List(returning);
        if (dialect == SqlDialect.Sqlite)
        {
            return new StringBuilder()
                .Append(insertInto)
                .Append("SELECT ").Append(values).Append(Candidate("n.next"))
                .Append(" FROM (SELECT CASE WHEN ").Append(baseFree).Append(" THEN 0 ELSE ").Append(largest)
                .Append(" + 1 + ").Append(OffsetParameter).Append(" END AS next) AS n")
                // WHERE true: SQLite needs it to parse ON CONFLICT after INSERT … SELECT.
                .Append(" WHERE true").Append(onConflict)
                .ToString();
        }

        // idem_n: the first candidate's suffix (0 = the base) and the largest in use, read once from the snapshot.
        // Candidate i > 0: the base was free → largest + i; else first + i.
        // idem_m is MATERIALIZED so that the search for the largest suffix runs once, not once per use.
        var sql = new StringBuilder()
            .Append("WITH idem_m AS MATERIALIZED (SELECT ").Append(largest).Append(" AS largest)")
            .Append(", idem_n AS (SELECT CASE WHEN ").Append(baseFree).Append(" THEN 0 ELSE m.largest + 1 + ").Append(OffsetParameter)
            .Append(" END AS first, m.largest FROM idem_m AS m)");
        for (var i = 0; i < PostgreSqlSlugCandidates; i++)
        {
            var suffix = i == 0 ? "n.first" : $"CASE WHEN n.first = 0 THEN n.largest + {i} ELSE n.first + {i} END";
            sql.Append(", idem_c").Append(i).Append(" AS (").Append(insertInto)
                .Append("SELECT ").Append(values).Append(Candidate(suffix)).Append(" FROM idem_n AS n");
            for (var earlier = 0; earlier < i; earlier++)
            {
                sql.Append(earlier == 0 ? " WHERE " : " AND ").Append("NOT EXISTS (SELECT 1 FROM idem_c").Append(earlier).Append(')');
            }

            sql.Append(onConflict).Append(')');
        }

        for (var i = 0; i < PostgreSqlSlugCandidates; i++)
        {
            sql.Append(i == 0 ? " " : " UNION ALL ").Append("SELECT ").Append(List(returning)).Append(" FROM idem_c").Append(i);
        }

        return sql.ToString();
    }

    /// <summary>
    /// What every slug counted for <paramref name="baseSlug"/> starts with: the base cut as short as the longest suffix
    /// would cut it. SQLite: as a LIKE pattern (wildcards in the base escaped, then <c>%</c>); PostgreSQL: the prefix
    /// itself, the lower bound of a range.
    /// </summary>
    public static string SlugPattern(SqlDialect dialect, string baseSlug, int maxLength)
    {
        var shortest = Cut(baseSlug, maxLength - 1 - Slug.MaxSuffixDigits);
        var prefix = shortest.Length == baseSlug.Length ? baseSlug + "-" : shortest;
        return dialect == SqlDialect.PostgreSql
            ? prefix
            : prefix.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("%", "\\%", StringComparison.Ordinal).Replace("_", "\\_", StringComparison.Ordinal) + "%";
    }

    /// <summary>Mirrors Slug.Cut in Idem: cut to a length (nothing when not positive), then trim trailing dashes.</summary>
    public static string Cut(string slug, int length) =>
        length <= 0 ? string.Empty : (slug.Length > length ? slug[..length] : slug).TrimEnd('-');

    /// <summary>
    /// The offset added to the next suffix on the given attempt (0 on the first): a random number below 4^(attempt-1), so
    /// that contenders who all read the same largest suffix spread over more candidates each time they collide.
    /// </summary>
    public static long SlugOffset(int attempt) =>
        attempt <= 0 ? 0 : Random.Shared.NextInt64(1L << Math.Min(2 * (attempt - 1), 40));
}
