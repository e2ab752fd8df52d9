using System.Data.Common;
using System.Globalization;
using Idem.Cli.Common;
using Spectre.Console;

namespace Idem.Cli.Commands.Dedupe;

/// <summary>
/// One dedupe command against one table: reads the rows' ids, order and key values, groups them by natural key in
/// this process (so the key is computed the same way on both databases), plans parameterized statements with every
/// identifier taken from the catalog and quoted, and prints them (dry run) or runs them in one transaction (--apply).
/// </summary>
internal sealed class DedupeRun(DedupeDatabase db, DedupeRequest request, IAnsiConsole console, string? jsonTarget, string maskedConnection)
{
    private const int PrintedStatements = 50;

    public async Task<int> RunAsync(CancellationToken cancellationToken)
    {
        var table = await db.FindTableAsync(request.Table, request.IdColumn, cancellationToken).ConfigureAwait(false);
        var keyColumns = request.Key.Columns.Select(c => Resolve(table, c)).ToList();
        var order = request.KeepOldestBy is { } keep ? Resolve(table, keep) : table.IdColumn;
        var keyColumn = request.KeyColumn is { } kc ? (Find(table, kc) ?? kc) : null;
        var keyColumnExists = request.KeyColumn is { } k && Find(table, k) is not null;
        if (keyColumn is not null && keyColumns.Contains(keyColumn, StringComparer.OrdinalIgnoreCase))
        {
            throw new UsageException($"--key-column {keyColumn} is one of the key's own columns. Nothing was changed.");
        }

        var foreignKeys = request.Operation == "merge" ? await db.ForeignKeysToAsync(table, cancellationToken).ConfigureAwait(false) : [];
        var rows = await ReadRowsAsync(table, keyColumns, order, foreignKeys, keyColumnExists ? keyColumn : null, cancellationToken).ConfigureAwait(false);
        var groups = rows
            .Where(r => r.Group is not null)
            .GroupBy(r => r.Group!, StringComparer.Ordinal)
            .Where(g => g.Count() > 1)
            .Select(g => g.OrderBy(r => r.Order, ValueComparer.Instance).ThenBy(r => r.Id, ValueComparer.Instance).ToList())
            .OrderBy(g => g[0].Order, ValueComparer.Instance).ThenBy(g => g[0].Id, ValueComparer.Instance)
            .ToList();

        var quoted = DedupeDatabase.QuoteTable(table);
        var statements = new List<Planned>();
        var exit = ExitCodes.Ok;
        var notes = new List<string>();
        switch (request.Operation)
        {
            case "report":
                exit = groups.Count > 0 ? ExitCodes.Finding : ExitCodes.Ok;
                break;

            case "backfill":
            {
                var target = keyColumn ?? throw new UsageException("backfill needs --key-column (the column to fill). Nothing was changed.");
                if (!keyColumnExists)
                {
                    statements.Add(new Planned($"ALTER TABLE {quoted} ADD COLUMN {DedupeDatabase.Quote(target)} {db.TextType}", [], "add the key column", 0));
                }

                foreach (var row in rows.Where(r => !string.Equals(r.Text, r.CurrentKey, StringComparison.Ordinal)))
                {
                    statements.Add(new Planned(
                        $"UPDATE {quoted} SET {DedupeDatabase.Quote(target)} = {db.Parameter(0)} WHERE {DedupeDatabase.Quote(table.IdColumn)} = {db.Parameter(1)}",
                        [row.Text, row.Id],
                        $"fill the key of {Show(row.Id)}",
                        1));
                }

                break;
            }

            case "merge":
                foreach (var group in groups)
                {
                    var survivor = group[0];
                    foreach (var loser in group.Skip(1))
                    {
                        foreach (var fk in foreignKeys)
                        {
                            var from = loser.Referenced[fk.ReferencedColumn];
                            var to = survivor.Referenced[fk.ReferencedColumn];
                            if (from is null)
                            {
                                continue;
                            }

                            var child = DedupeDatabase.QuoteTable(fk.ChildSchema, fk.ChildTable);
                            var column = DedupeDatabase.Quote(fk.ChildColumn);
                            var count = Convert.ToInt64(await db.ScalarAsync($"SELECT count(*) FROM {child} WHERE {column} = {db.Parameter(0)}", null, cancellationToken, from).ConfigureAwait(false), CultureInfo.InvariantCulture);
                            if (count > 0)
                            {
                                statements.Add(new Planned(
                                    $"UPDATE {child} SET {column} = {db.Parameter(0)} WHERE {column} = {db.Parameter(1)}",
                                    [to, from],
                                    $"re-point {count} {fk.ChildTable}.{fk.ChildColumn} row(s) from {Show(loser.Id)} to {Show(survivor.Id)}",
                                    count));
                            }
                        }

                        statements.Add(new Planned(
                            $"DELETE FROM {quoted} WHERE {DedupeDatabase.Quote(table.IdColumn)} = {db.Parameter(0)}",
                            [loser.Id],
                            $"delete {Show(loser.Id)} (duplicate of {Show(survivor.Id)})",
                            1));
                    }
                }

                break;

            case "lock":
            {
                IReadOnlyList<string> indexed;
                if (request.Key.SortedSet)
                {
                    if (keyColumn is null || !keyColumnExists)
                    {
                        throw new UsageException("a sorted-set key is locked through its key column: run backfill --key-column COLUMN first, then lock with the same --key-column. Nothing was changed.");
                    }

                    indexed = [keyColumn];
                    var unfilled = rows.Count(r => !string.Equals(r.Text, r.CurrentKey, StringComparison.Ordinal));
                    if (unfilled > 0)
                    {
                        notes.Add($"{unfilled} row(s) have a {keyColumn} that differs from the key: run backfill first.");
                        exit = ExitCodes.Finding;
                    }
                }
                else
                {
                    indexed = keyColumns;
                }

                if (groups.Count > 0)
                {
                    notes.Add($"{groups.Count} duplicate group(s) remain: run merge first (a unique index cannot be built over duplicates).");
                    exit = ExitCodes.Finding;
                }

                var index = request.IndexName ?? DefaultIndexName(table.Name, indexed);
                if (await db.IndexExistsAsync(table, index, cancellationToken).ConfigureAwait(false))
                {
                    notes.Add($"index {index} exists already: nothing to do.");
                }
                else if (exit == ExitCodes.Ok)
                {
                    statements.Add(new Planned(
                        $"CREATE UNIQUE INDEX {DedupeDatabase.Quote(index)} ON {quoted} ({string.Join(", ", indexed.Select(DedupeDatabase.Quote))})",
                        [],
                        $"lock {request.Key.Describe()} with unique index {index}",
                        0));
                }

                break;
            }

            default:
                throw new UsageException($"unknown operation {request.Operation}.");
        }

        var applied = request.Apply && statements.Count > 0 && exit == ExitCodes.Ok
            ? await ApplyAsync(statements, cancellationToken).ConfigureAwait(false)
            : (long?)null;
        Print(table, groups, statements, notes, applied);
        if (jsonTarget is not null)
        {
            await Shell.WriteJsonAsync(jsonTarget, new
            {
                operation = request.Operation,
                database = db.Kind,
                connection = maskedConnection,
                table = table.Schema is null ? table.Name : table.Schema + "." + table.Name,
                key = request.Key.Describe(),
                dryRun = !request.Apply,
                rows = rows.Count,
                groups = groups.Select(g => new { key = NaturalKey.Display(g[0].Group!), count = g.Count, ids = g.Select(r => r.Id), survivor = g[0].Id }),
                statements = statements.Select(s => new { sql = s.Sql, parameters = s.Parameters, purpose = s.Purpose, rows = s.Rows }),
                notes,
                applied = applied is not null,
                changedRows = applied ?? 0,
                exitCode = exit,
            }, cancellationToken).ConfigureAwait(false);
        }

        return exit;
    }

    private async Task<long> ApplyAsync(List<Planned> statements, CancellationToken cancellationToken)
    {
        var transaction = await db.BeginAsync(cancellationToken).ConfigureAwait(false);
        await using (transaction.ConfigureAwait(false))
        {
            long changed = 0;
            try
            {
                foreach (var statement in statements)
                {
                    await using var command = db.Command(statement.Sql, transaction, statement.Parameters);
                    var rows = await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                    statement.Rows = Math.Max(rows, 0);
                    changed += Math.Max(rows, 0);
                }

                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                return changed;
            }
            catch (DbException ex)
            {
                await transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
                throw new UsageException($"the transaction was rolled back, nothing was changed: {ex.Message}");
            }
        }
    }

    private async Task<List<Row>> ReadRowsAsync(CatalogTable table, List<string> keyColumns, string order, IReadOnlyList<ForeignKey> foreignKeys, string? keyColumn, CancellationToken cancellationToken)
    {
        var referenced = foreignKeys.Select(f => f.ReferencedColumn).Distinct(StringComparer.Ordinal).ToList();
        var selected = new List<string> { table.IdColumn, order };
        selected.AddRange(keyColumns);
        selected.AddRange(referenced);
        if (keyColumn is not null)
        {
            selected.Add(keyColumn);
        }

        var sql = $"SELECT {string.Join(", ", selected.Select(DedupeDatabase.Quote))} FROM {DedupeDatabase.QuoteTable(table)}";
        var result = new List<Row>();
        foreach (var values in await db.RowsAsync(sql, null, cancellationToken).ConfigureAwait(false))
        {
            var key = values.AsSpan(2, keyColumns.Count);
            var refs = new Dictionary<string, object?>(StringComparer.Ordinal);
            for (var i = 0; i < referenced.Count; i++)
            {
                refs[referenced[i]] = values[2 + keyColumns.Count + i];
            }

            result.Add(new Row(
                values[0]!,
                values[1],
                request.Key.GroupOf(key),
                request.Key.TextOf(key),
                keyColumn is null ? null : values[^1] is { } current ? NaturalKey.Format(current) : null,
                refs));
        }

        return result;
    }

    private void Print(CatalogTable table, List<List<Row>> groups, List<Planned> statements, List<string> notes, long? applied)
    {
        var name = table.Schema is null ? table.Name : table.Schema + "." + table.Name;
        console.MarkupLine($"idem dedupe {request.Operation}: {Markup.Escape(db.Kind)} {Markup.Escape(maskedConnection)}, table {Markup.Escape(name)}, key {Markup.Escape(request.Key.Describe())}.");
        if (request.Operation is "report" or "merge" || groups.Count > 0)
        {
            console.MarkupLine(groups.Count == 0
                ? "[green]No duplicate groups.[/]"
                : $"[red bold]{groups.Count} duplicate group(s)[/], {groups.Sum(g => g.Count - 1)} extra row(s):");
            if (groups.Count > 0)
            {
                var grid = new Table().Border(TableBorder.Rounded).AddColumn("key").AddColumn("count").AddColumn("ids (kept first)");
                foreach (var group in groups.Take(PrintedStatements))
                {
                    grid.AddRow(Markup.Escape(NaturalKey.Display(group[0].Group!)), group.Count.ToString(CultureInfo.InvariantCulture), Markup.Escape(string.Join(", ", group.Select(r => Show(r.Id)))));
                }

                console.Write(grid);
                if (groups.Count > PrintedStatements)
                {
                    console.MarkupLine($"… and {groups.Count - PrintedStatements} more group(s) (all of them in --json).");
                }
            }
        }

        foreach (var note in notes)
        {
            console.MarkupLine(Markup.Escape(note));
        }

        if (request.Operation == "report")
        {
            return;
        }

        if (statements.Count == 0)
        {
            console.MarkupLine("Nothing to change.");
            return;
        }

        console.MarkupLine(applied is { } changed
            ? $"[green]Applied {statements.Count} statement(s) in one transaction; {changed} row(s) changed.[/]"
            : $"[yellow]Dry run[/]: would run these {statements.Count} statement(s) in one transaction (nothing changed; add --apply):");
        foreach (var statement in statements.Take(PrintedStatements))
        {
            var parameters = statement.Parameters.Length == 0 ? "" : "  -- " + string.Join(", ", statement.Parameters.Select((p, i) => $"{db.Parameter(i)} = {Show(p)}"));
            console.MarkupLine($"  {Markup.Escape(statement.Sql + ";" + parameters)}  [grey]({Markup.Escape(statement.Purpose)})[/]");
        }

        if (statements.Count > PrintedStatements)
        {
            console.MarkupLine($"  … and {statements.Count - PrintedStatements} more (all of them in --json).");
        }
    }

    private string Resolve(CatalogTable table, string column) =>
        Find(table, column) ?? throw new UsageException($"table {request.Table} has no column '{column}' (its columns: {string.Join(", ", table.Columns)}). Nothing was changed.");

    private string? Find(CatalogTable table, string column)
    {
        var comparison = db.Kind == "sqlite" ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        if (string.Equals(column, table.IdColumn, comparison))
        {
            return table.IdColumn;
        }

        return table.Columns.FirstOrDefault(c => string.Equals(c, column, comparison));
    }

    private static string DefaultIndexName(string table, IEnumerable<string> columns)
    {
        var name = new string(("ux_" + table + "_" + string.Join('_', columns)).Select(c => char.IsAsciiLetterOrDigit(c) ? char.ToLowerInvariant(c) : '_').ToArray());
        return name.Length > 63 ? name[..63] : name;
    }

    private static string Show(object? value) => value switch
    {
        null => "NULL",
        string s => "'" + s.Replace("'", "''", StringComparison.Ordinal) + "'",
        _ => NaturalKey.Format(value),
    };

    private sealed record Row(object Id, object? Order, string? Group, string? Text, string? CurrentKey, IReadOnlyDictionary<string, object?> Referenced);

    private sealed class Planned(string sql, object?[] parameters, string purpose, long rows)
    {
        public string Sql => sql;

        public object?[] Parameters => parameters;

        public string Purpose => purpose;

        public long Rows { get; set; } = rows;
    }

    /// <summary>Orders database values: same-typed values by their own order, numbers by value, NULLs last, anything else as text.</summary>
    private sealed class ValueComparer : IComparer<object?>
    {
        public static readonly ValueComparer Instance = new();

        public int Compare(object? x, object? y)
        {
            if (x is null || y is null)
            {
                return x is null ? (y is null ? 0 : 1) : -1;
            }

            if (x.GetType() == y.GetType() && x is IComparable comparable)
            {
                return comparable.CompareTo(y);
            }

            if (IsNumber(x) && IsNumber(y))
            {
                return Convert.ToDecimal(x, CultureInfo.InvariantCulture).CompareTo(Convert.ToDecimal(y, CultureInfo.InvariantCulture));
            }

            return string.CompareOrdinal(NaturalKey.Format(x), NaturalKey.Format(y));
        }

        private static bool IsNumber(object value) => value is int or long or short or byte or decimal or double or float or uint or ulong or ushort or sbyte;
    }
}
