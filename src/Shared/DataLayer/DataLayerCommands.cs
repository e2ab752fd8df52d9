// Shared source (see DataLayerSql.cs): create-or-get and unique-slug inserts over the caller's own DbConnection and
// DbTransaction, for the ADO.NET helpers of Idem.PostgreSql and Idem.Sqlite.
using System.Data;
using System.Data.Common;
using System.Runtime.CompilerServices;

namespace Idem.DataLayer;

internal static class DataLayerCommands
{
    private const int MaxReads = 3;

    private static readonly ConditionalWeakTable<CreateOrGetDefinition, string[]> CreateOrGetSql = new();
    private static readonly ConditionalWeakTable<UniqueSlugDefinition, string> SlugSql = new();

    public static async Task<CreateOrGetResult<T>> CreateOrGetAsync<T>(
        DbConnection connection,
        DbTransaction? transaction,
        SqlDialect dialect,
        CreateOrGetDefinition definition,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(read);
        CheckValues(values, definition.Columns.Count);
        foreach (var ordinal in definition.KeyOrdinals)
        {
            if (values[ordinal] is null or DBNull)
            {
                throw new ArgumentException($"The natural key column '{definition.Columns[ordinal]}' must not be null: a unique index never matches NULL, so the row could be created twice.", nameof(values));
            }
        }

        var sql = CreateOrGetSql.GetValue(definition, d =>
        {
            var table = DataLayerSql.Table(d.Table, d.Schema);
            return
            [
                DataLayerSql.CreateOrGet(dialect, table, d.Columns, d.KeyColumns, d.KeyOrdinals, d.Returning),
                DataLayerSql.Read(table, d.KeyColumns, d.KeyOrdinals, d.Returning, createdColumn: dialect == SqlDialect.PostgreSql),
            ];
        });

        // SQLite outside a transaction reads first: a read is a shared lock, while every insert attempt, even one that
        // inserts nothing, takes the database's single write lock, so an existing row costs one read instead of a write
        // attempt and a read (benchmarks/datalayer-results.md). This is not check-then-insert: the read only shortcuts the
        // common case, the insert after it is still the conflict-safe INSERT … ON CONFLICT DO NOTHING (it never assumes
        // the row is absent), and the unique index alone decides. Inside the caller's transaction the insert goes first:
        // a read would start a snapshot that the insert may then be unable to upgrade (SQLITE_BUSY_SNAPSHOT in WAL mode
        // when another writer committed in between), and with BEGIN IMMEDIATE the write lock is held anyway.
        var readFirst = dialect == SqlDialect.Sqlite && transaction is null;
        var opened = await OpenAsync(connection, cancellationToken).ConfigureAwait(false);
        try
        {
            // One command for every statement: a caller's DbParameter can belong to one command only.
            await using var command = connection.CreateCommand();
            command.Transaction = transaction;
            AddValues(command, values);
            var insertAt = readFirst ? 1 : 0;
            for (var statement = 0; statement <= MaxReads + insertAt; statement++)
            {
                var insert = statement == insertAt;
                command.CommandText = sql[insert ? 0 : 1];
                await PrepareAsync(command, dialect, cancellationToken).ConfigureAwait(false);
                await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                if (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    var created = insert && (dialect == SqlDialect.Sqlite || reader.GetBoolean(definition.Returning.Count));
                    var value = read(reader);
                    if (created)
                    {
                        DataLayerMetrics.Created(definition.Table);
                    }
                    else
                    {
                        DataLayerMetrics.Found(definition.Table);
                        if (statement > insertAt && (dialect == SqlDialect.PostgreSql || readFirst))
                        {
                            // Known only when the row was absent before the insert: PostgreSQL's one statement returned
                            // nothing, or SQLite's first read found nothing. SQLite's insert-first cannot tell.
                            Resolved(definition);
                        }
                    }

                    return new CreateOrGetResult<T>(value, created);
                }
            }
        }
        finally
        {
            if (opened)
            {
                await connection.CloseAsync().ConfigureAwait(false);
            }
        }

        throw new InvalidOperationException(
            $"Create-or-get on '{definition.Table}' met an existing row but could not read it back {MaxReads} times: it is being deleted concurrently, or no unique index covers exactly ({string.Join(", ", definition.KeyColumns)}).");
    }

    public static async Task<T> InsertWithUniqueSlugAsync<T>(
        DbConnection connection,
        DbTransaction? transaction,
        SqlDialect dialect,
        UniqueSlugDefinition definition,
        string name,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(read);
        CheckValues(values, definition.Columns.Count);
        var options = definition.Options;
        var baseSlug = Slug.FromName(name, options);
        var sql = SlugSql.GetValue(definition, d => DataLayerSql.InsertWithSlug(dialect, DataLayerSql.Table(d.Table, d.Schema), d.SlugColumn, d.Columns, d.Returning));
        var pattern = DataLayerSql.SlugPattern(dialect, baseSlug, options.MaxLength);

        var opened = await OpenAsync(connection, cancellationToken).ConfigureAwait(false);
        try
        {
            await using var command = connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = sql;
            AddValues(command, values);
            Add(command, DataLayerSql.BaseParameter, baseSlug);
            Add(command, DataLayerSql.MaxLengthParameter, options.MaxLength);
            Add(command, DataLayerSql.PatternParameter, pattern);
            var offset = Add(command, DataLayerSql.OffsetParameter, 0L);
            await PrepareAsync(command, dialect, cancellationToken).ConfigureAwait(false);
            for (var attempt = 0; attempt < options.MaxAttempts; attempt++)
            {
                DataLayerMetrics.SlugAttempt(definition.Table);
                offset.Value = DataLayerSql.SlugOffset(attempt);
                await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                if (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    DataLayerMetrics.Created(definition.Table);
                    return read(reader);
                }

                DataLayerMetrics.ConflictResolved(definition.Table, "slug");
                if (definition.Logger is { } logger)
                {
                    DataLayerLog.SlugTaken(logger, definition.Table, baseSlug, attempt + 1);
                }
            }
        }
        finally
        {
            if (opened)
            {
                await connection.CloseAsync().ConfigureAwait(false);
            }
        }

        if (definition.Logger is { } exhausted)
        {
            DataLayerLog.SlugExhausted(exhausted, definition.Table, baseSlug, options.MaxAttempts);
        }

        throw new SlugAllocationException(baseSlug, options.MaxAttempts);
    }

    private static void Resolved(CreateOrGetDefinition definition)
    {
        DataLayerMetrics.ConflictResolved(definition.Table, "create_or_get");
        if (definition.Logger is { } logger)
        {
            DataLayerLog.ConflictResolved(logger, definition.Table);
        }
    }

    /// <summary>
    /// On PostgreSQL the statement is prepared: Npgsql keeps it prepared on each physical connection across pool
    /// returns, so only the first call on a connection parses and plans it (as Idem's store does with its own).
    /// </summary>
    private static Task PrepareAsync(DbCommand command, SqlDialect dialect, CancellationToken cancellationToken) =>
        dialect == SqlDialect.PostgreSql ? command.PrepareAsync(cancellationToken) : Task.CompletedTask;

    private static void CheckValues(IReadOnlyList<object?> values, int columns)
    {
        if (values.Count != columns)
        {
            throw new ArgumentException($"{values.Count} values were given for {columns} columns.", nameof(values));
        }
    }

    private static async ValueTask<bool> OpenAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        if (connection.State == ConnectionState.Open)
        {
            return false;
        }

        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        return true;
    }

    private static void AddValues(DbCommand command, IReadOnlyList<object?> values)
    {
        for (var i = 0; i < values.Count; i++)
        {
            Add(command, DataLayerSql.ValueParameter(i), values[i]);
        }
    }

    private static DbParameter Add(DbCommand command, string name, object? value)
    {
        if (value is DbParameter given)
        {
            // A typed parameter from the caller (a NULL of a given type, a provider-specific type) is used as is.
            given.ParameterName = name;
            command.Parameters.Add(given);
            return given;
        }

        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value ?? DBNull.Value;
        command.Parameters.Add(parameter);
        return parameter;
    }
}
