using System.Data.Common;
using System.Globalization;
using Idem.Cli.Common;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Idem.Cli.Commands.Dedupe;

/// <summary>A table as the catalog names it: every identifier the tool puts in SQL comes from here, quoted.</summary>
internal sealed record CatalogTable(string? Schema, string Name, IReadOnlyList<string> Columns, string IdColumn);

/// <summary>A single-column foreign key that references <see cref="ReferencedColumn"/> of the table being deduplicated.</summary>
internal sealed record ForeignKey(string? ChildSchema, string ChildTable, string ChildColumn, string ReferencedColumn, string Name);

/// <summary>
/// One database (PostgreSQL or SQLite) as the dedupe commands need it: its catalog (tables, columns, primary key, the
/// foreign keys that reference a table, indexes), identifier quoting, and one connection for the whole run.
/// </summary>
internal abstract class DedupeDatabase : IAsyncDisposable
{
    protected DedupeDatabase(DbConnection connection) => Connection = connection;

    public DbConnection Connection { get; }

    public abstract string Kind { get; }

    /// <summary>Quotes an identifier: wrapped in double quotes, embedded quotes doubled (both databases).</summary>
    public static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    public static string QuoteTable(string? schema, string name) => schema is null ? Quote(name) : Quote(schema) + "." + Quote(name);

    public static string QuoteTable(CatalogTable table) => QuoteTable(table.Schema, table.Name);

    /// <summary>The parameter placeholder for the <paramref name="index"/>th (0-based) parameter.</summary>
    public abstract string Parameter(int index);

    public static async Task<DedupeDatabase> OpenAsync(string kind, string connection, CancellationToken cancellationToken)
    {
        DedupeDatabase database = kind switch
        {
            "postgresql" => new PostgreSqlDedupeDatabase(new NpgsqlConnection(connection)),
            "sqlite" => new SqliteDedupeDatabase(OpenSqlite(connection)),
            _ => throw new UsageException($"--database '{kind}' is not one of postgresql, sqlite."),
        };
        try
        {
            await database.Connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            return database;
        }
        catch
        {
            await database.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static SqliteConnection OpenSqlite(string connection)
    {
        var builder = new SqliteConnectionStringBuilder(connection.Contains('=', StringComparison.Ordinal) ? connection : "Data Source=" + connection);
        if (!File.Exists(builder.DataSource))
        {
            throw new UsageException($"no SQLite database at '{Path.GetFullPath(builder.DataSource)}' (nothing was created).");
        }

        // Never create a file by mistake; the repair needs write access only with --apply, but opens read-write once.
        builder.Mode = SqliteOpenMode.ReadWrite;
        return new SqliteConnection(builder.ConnectionString);
    }

    /// <summary>Finds the table in the catalog, or throws <see cref="UsageException"/> (exit 2) naming what is missing.</summary>
    public abstract Task<CatalogTable> FindTableAsync(string name, string? idColumn, CancellationToken cancellationToken);

    /// <summary>Every foreign key of any table that references <paramref name="table"/>; multi-column keys throw <see cref="UsageException"/>.</summary>
    public abstract Task<IReadOnlyList<ForeignKey>> ForeignKeysToAsync(CatalogTable table, CancellationToken cancellationToken);

    public abstract Task<bool> IndexExistsAsync(CatalogTable table, string index, CancellationToken cancellationToken);

    /// <summary>The column type used when backfill adds the key column.</summary>
    public abstract string TextType { get; }

    public DbCommand Command(string sql, DbTransaction? transaction, params object?[] parameters)
    {
        var command = Connection.CreateCommand();
        command.CommandText = sql;
        command.Transaction = transaction;
        foreach (var value in parameters)
        {
            var parameter = command.CreateParameter();
            if (this is SqliteDedupeDatabase)
            {
                parameter.ParameterName = "$p" + command.Parameters.Count.ToString(CultureInfo.InvariantCulture);
            }

            parameter.Value = value ?? DBNull.Value;
            command.Parameters.Add(parameter);
        }

        return command;
    }

    public async Task<object?> ScalarAsync(string sql, DbTransaction? transaction, CancellationToken cancellationToken, params object?[] parameters)
    {
        await using var command = Command(sql, transaction, parameters);
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task<List<object?[]>> RowsAsync(string sql, DbTransaction? transaction, CancellationToken cancellationToken, params object?[] parameters)
    {
        await using var command = Command(sql, transaction, parameters);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        var rows = new List<object?[]>();
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            var row = new object?[reader.FieldCount];
            for (var i = 0; i < row.Length; i++)
            {
                row[i] = await reader.IsDBNullAsync(i, cancellationToken).ConfigureAwait(false) ? null : reader.GetValue(i);
            }

            rows.Add(row);
        }

        return rows;
    }

    public async Task<DbTransaction> BeginAsync(CancellationToken cancellationToken) =>
        await Connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);

    public ValueTask DisposeAsync() => Connection.DisposeAsync();

    protected static UsageException NoSuchColumn(string table, string column, IEnumerable<string> columns) =>
        new($"table {table} has no column '{column}' (its columns: {string.Join(", ", columns)}). Nothing was changed.");
}

internal sealed class PostgreSqlDedupeDatabase(NpgsqlConnection connection) : DedupeDatabase(connection)
{
    public override string Kind => "postgresql";

    public override string TextType => "text";

    public override string Parameter(int index) => "$" + (index + 1).ToString(CultureInfo.InvariantCulture);

    public override async Task<CatalogTable> FindTableAsync(string name, string? idColumn, CancellationToken cancellationToken)
    {
        var parts = name.Split('.');
        if (parts.Length > 2 || parts.Any(string.IsNullOrEmpty))
        {
            throw new UsageException($"--table '{name}' is not TABLE or SCHEMA.TABLE. Nothing was changed.");
        }

        // to_regclass parses the quoted name exactly as written (no case folding) and finds it on the search path.
        var regclass = parts.Length == 2 ? Quote(parts[0]) + "." + Quote(parts[1]) : Quote(parts[0]);
        var found = await RowsAsync(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')",
            null, cancellationToken, regclass).ConfigureAwait(false);
        if (found.Count == 0)
        {
            throw new UsageException($"no table '{name}' in this database. Nothing was changed.");
        }

        var schema = (string)found[0][0]!;
        var table = (string)found[0][1]!;
        var qualified = QuoteTable(schema, table);
        var columns = (await RowsAsync(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            null, cancellationToken, qualified).ConfigureAwait(false)).Select(r => (string)r[0]!).ToList();
        string id;
        if (idColumn is not null)
        {
            id = columns.Contains(idColumn, StringComparer.Ordinal) ? idColumn : throw NoSuchColumn(name, idColumn, columns);
        }
        else
        {
            var primary = await RowsAsync(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
                null, cancellationToken, qualified).ConfigureAwait(false);
            id = primary.Count == 1
                ? (string)primary[0][0]!
                : throw new UsageException($"table {name} has {(primary.Count == 0 ? "no primary key" : "a primary key of several columns")}: name a unique id column with --id. Nothing was changed.");
        }

        return new CatalogTable(schema, table, columns, id);
    }

    public override async Task<IReadOnlyList<ForeignKey>> ForeignKeysToAsync(CatalogTable table, CancellationToken cancellationToken)
    {
        var rows = await RowsAsync(
            """
            SELECT n.nspname, cl.relname, c.conname, array_length(c.conkey, 1),
                   (SELECT attname FROM pg_attribute WHERE attrelid = c.conrelid AND attnum = c.conkey[1]),
                   (SELECT attname FROM pg_attribute WHERE attrelid = c.confrelid AND attnum = c.confkey[1])
            FROM pg_constraint c
            JOIN pg_class cl ON cl.oid = c.conrelid
            JOIN pg_namespace n ON n.oid = cl.relnamespace
            WHERE c.contype = 'f' AND c.confrelid = to_regclass($1)
            ORDER BY n.nspname, cl.relname, c.conname
            """,
            null, cancellationToken, QuoteTable(table)).ConfigureAwait(false);
        var several = rows.Where(r => Convert.ToInt32(r[3], CultureInfo.InvariantCulture) != 1).Select(r => $"{r[0]}.{r[1]} ({r[2]})").ToList();
        if (several.Count > 0)
        {
            throw new UsageException($"foreign keys of several columns reference {table.Name}: {string.Join(", ", several)}; merge re-points single-column keys only. Nothing was changed.");
        }

        return [.. rows.Select(r => new ForeignKey((string)r[0]!, (string)r[1]!, (string)r[4]!, (string)r[5]!, (string)r[2]!))];
    }

    public override async Task<bool> IndexExistsAsync(CatalogTable table, string index, CancellationToken cancellationToken) =>
        await ScalarAsync("SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = $2", null, cancellationToken, table.Schema, index).ConfigureAwait(false) is long n && n > 0;
}

internal sealed class SqliteDedupeDatabase(SqliteConnection connection) : DedupeDatabase(connection)
{
    public override string Kind => "sqlite";

    public override string TextType => "TEXT";

    public override string Parameter(int index) => "$p" + index.ToString(CultureInfo.InvariantCulture);

    public override async Task<CatalogTable> FindTableAsync(string name, string? idColumn, CancellationToken cancellationToken)
    {
        var found = await RowsAsync("SELECT name FROM sqlite_master WHERE type = 'table' AND name = $p0 COLLATE NOCASE", null, cancellationToken, name).ConfigureAwait(false);
        if (found.Count == 0)
        {
            throw new UsageException($"no table '{name}' in this database. Nothing was changed.");
        }

        var table = (string)found[0][0]!;
        var info = await RowsAsync("SELECT name, pk FROM pragma_table_info($p0) ORDER BY cid", null, cancellationToken, table).ConfigureAwait(false);
        var columns = info.Select(r => (string)r[0]!).ToList();
        string id;
        if (idColumn is not null)
        {
            id = columns.FirstOrDefault(c => c.Equals(idColumn, StringComparison.OrdinalIgnoreCase)) ?? throw NoSuchColumn(name, idColumn, columns);
        }
        else
        {
            var primary = info.Where(r => Convert.ToInt64(r[1], CultureInfo.InvariantCulture) > 0).Select(r => (string)r[0]!).ToList();
            id = primary.Count switch
            {
                1 => primary[0],
                0 => "rowid",
                _ => throw new UsageException($"table {name} has a primary key of several columns: name a unique id column with --id. Nothing was changed."),
            };
        }

        return new CatalogTable(null, table, columns, id);
    }

    public override async Task<IReadOnlyList<ForeignKey>> ForeignKeysToAsync(CatalogTable table, CancellationToken cancellationToken)
    {
        var rows = await RowsAsync(
            """
            SELECT m.name, f.id, f."from", f."to", (SELECT count(*) FROM pragma_foreign_key_list(m.name) g WHERE g.id = f.id)
            FROM sqlite_master m, pragma_foreign_key_list(m.name) f
            WHERE m.type = 'table' AND f."table" = $p0 COLLATE NOCASE
            ORDER BY m.name, f.id, f.seq
            """,
            null, cancellationToken, table.Name).ConfigureAwait(false);
        var several = rows.Where(r => Convert.ToInt64(r[4], CultureInfo.InvariantCulture) != 1).Select(r => (string)r[0]!).Distinct().ToList();
        if (several.Count > 0)
        {
            throw new UsageException($"foreign keys of several columns reference {table.Name}: {string.Join(", ", several)}; merge re-points single-column keys only. Nothing was changed.");
        }

        // "to" is NULL when the key references the parent's primary key.
        return [.. rows.Select(r => new ForeignKey(null, (string)r[0]!, (string)r[2]!, r[3] as string ?? table.IdColumn, $"{r[0]}.{r[2]}"))];
    }

    public override async Task<bool> IndexExistsAsync(CatalogTable table, string index, CancellationToken cancellationToken) =>
        await ScalarAsync("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = $p0 COLLATE NOCASE", null, cancellationToken, index).ConfigureAwait(false) is long n && n > 0;
}
