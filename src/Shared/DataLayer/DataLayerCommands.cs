// Shared source (see DataLayerSql.cs): create-or-get and unique-slug inserts over the caller's own DbConnection and
// DbTransaction, for the ADO.NET helpers of Idem.PostgreSql and Idem.Sqlite.
using System.Data;
using System.Data.Common;
using System.Runtime.CompilerServices;

namespace Idem.DataLayer;

/// <summary>
/// Whether the helpers may keep their commands on the caller's connection between calls (not when the connection is
/// opened for one call, as the data-source overloads do), and how to tell a kept command is still prepared (Npgsql).
/// </summary>
internal sealed class CommandKeeping(bool keep, Func<DbCommand, bool>? isPrepared)
{
    public static readonly CommandKeeping None = new(keep: false, isPrepared: null);

    public bool Keep { get; } = keep;

    public Func<DbCommand, bool>? IsPrepared { get; } = isPrepared;
}

internal static class DataLayerCommands
{
    private const int MaxReads = 3;

    private static readonly ConditionalWeakTable<CreateOrGetDefinition, CreateOrGetStatements> PostgreSqlCreateOrGet = new();
    private static readonly ConditionalWeakTable<CreateOrGetDefinition, CreateOrGetStatements> SqliteCreateOrGet = new();
    private static readonly ConditionalWeakTable<UniqueSlugDefinition, string> PostgreSqlSlug = new();
    private static readonly ConditionalWeakTable<UniqueSlugDefinition, string> SqliteSlug = new();
    private static readonly ConditionalWeakTable<DbConnection, PreparedCommands> Prepared = new();

    public static async Task<CreateOrGetResult<T>> CreateOrGetAsync<T>(
        DbConnection connection,
        DbTransaction? transaction,
        SqlDialect dialect,
        CreateOrGetDefinition definition,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        CommandKeeping keeping,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(read);
        CheckValues(values, definition.Columns.Count);
        var keyOrdinals = definition.KeyOrdinals;
        for (var i = 0; i < keyOrdinals.Count; i++)
        {
            if (values[keyOrdinals[i]] is null or DBNull)
            {
                throw new ArgumentException($"The natural key column '{definition.Columns[keyOrdinals[i]]}' must not be null: a unique index never matches NULL, so the row could be created twice.", nameof(values));
            }
        }

        var sql = dialect == SqlDialect.PostgreSql
            ? PostgreSqlCreateOrGet.GetValue(definition, static d => CreateOrGetStatements.For(SqlDialect.PostgreSql, d))
            : SqliteCreateOrGet.GetValue(definition, static d => CreateOrGetStatements.For(SqlDialect.Sqlite, d));

        // SQLite outside a transaction reads first: a read is a shared lock, while every insert attempt, even one that
        // inserts nothing, takes the database's single write lock, so an existing row costs one read instead of a write
        // attempt and a read (benchmarks/datalayer-results.md). This is not check-then-insert: the read only shortcuts the
        // common case, the insert after it is still the conflict-safe INSERT … ON CONFLICT DO NOTHING (it never assumes
        // the row is absent), and the unique index alone decides. Inside the caller's transaction the insert goes first:
        // a read would start a snapshot that the insert may then be unable to upgrade (SQLITE_BUSY_SNAPSHOT in WAL mode
        // when another writer committed in between), and with BEGIN IMMEDIATE the write lock is held anyway.
        // PostgreSQL picks its first statement from the definition's recent calls (CreateOrGetStreak).
        var first = dialect == SqlDialect.PostgreSql ? sql.Streak.First : CreateOrGetFirst.Combined;
        var readFirst = dialect == SqlDialect.Sqlite ? transaction is null : first == CreateOrGetFirst.Read;
        var insertText = first == CreateOrGetFirst.Insert ? sql.InsertOnly : sql.Insert;
        // The combined PostgreSQL statement's last column says whether it inserted; a plain insert returns a row only
        // when it inserted.
        var createdOrdinal = dialect == SqlDialect.PostgreSql && first != CreateOrGetFirst.Insert ? definition.Returning.Count : -1;
        var opened = await OpenAsync(connection, cancellationToken).ConfigureAwait(false);
        // On a connection the caller keeps open, the commands stay prepared between calls (PreparedCommands).
        var prepared = keeping.Keep && !opened && !HasParameterObjects(values) ? Prepared.GetValue(connection, static c => new PreparedCommands(c)) : null;
        DbCommand? shared = null;
        try
        {
            var insertAt = readFirst ? 1 : 0;
            for (var statement = 0; statement <= MaxReads + insertAt; statement++)
            {
                var insert = statement == insertAt;
                var text = insert ? insertText : sql.Read;
                DbCommand command;
                KeptCommand? keptCommand = null;
                if (prepared is not null)
                {
                    keptCommand = prepared.Rent(connection, text, insert ? sql.InsertParameters : sql.ReadParameters);
                    command = keptCommand.Command;
                    if (insert)
                    {
                        SetValues(command, values);
                    }
                    else
                    {
                        for (var i = 0; i < keyOrdinals.Count; i++)
                        {
                            command.Parameters[i].Value = values[keyOrdinals[i]];
                        }
                    }
                }
                else
                {
                    // One command for every statement: a caller's DbParameter can belong to one command only.
                    if (shared is null)
                    {
                        shared = connection.CreateCommand();
                        AddValues(shared, values);
                    }

                    shared.CommandText = text;
                    command = shared;
                }

                command.Transaction = transaction;
                var kept = false;
                (bool Found, bool Created, T Value) row;
                try
                {
                    await PrepareAsync(command, keptCommand, keeping, dialect, cancellationToken).ConfigureAwait(false);
                    row = await ReadRowAsync(command, insert, insert ? createdOrdinal : -1, read, cancellationToken).ConfigureAwait(false);
                    kept = keptCommand is not null && prepared!.Return(text, keptCommand);
                }
                finally
                {
                    if (prepared is not null && !kept)
                    {
                        await command.DisposeAsync().ConfigureAwait(false);
                    }
                }

                if (row.Found)
                {
                    if (dialect == SqlDialect.PostgreSql)
                    {
                        sql.Streak.Observe(row.Created);
                    }

                    if (row.Created)
                    {
                        DataLayerMetrics.Created(definition.Table);
                    }
                    else
                    {
                        DataLayerMetrics.Found(definition.Table);
                        if (readFirst ? statement >= insertAt : statement > insertAt && createdOrdinal >= 0)
                        {
                            // Known only when the row was absent before: a first read found nothing, or PostgreSQL's
                            // combined statement returned nothing. An insert that goes first cannot tell whether the row
                            // it met was there before or inserted concurrently.
                            Resolved(definition);
                        }
                    }

                    return new CreateOrGetResult<T>(row.Value, row.Created);
                }
            }
        }
        finally
        {
            if (shared is not null)
            {
                await shared.DisposeAsync().ConfigureAwait(false);
            }

            if (opened)
            {
                await connection.CloseAsync().ConfigureAwait(false);
            }
        }

        throw new InvalidOperationException(
            $"Create-or-get on '{definition.Table}' met an existing row but could not read it back {MaxReads} times: it is being deleted concurrently, or no unique index covers exactly ({string.Join(", ", definition.KeyColumns)}).");
    }

    /// <summary>
    /// Runs <paramref name="command"/> and reads its first row, if any; <paramref name="createdOrdinal"/> is the
    /// PostgreSQL statement's "inserted" column (-1: a row of the insert means inserted).
    /// </summary>
    private static async Task<(bool Found, bool Created, T Value)> ReadRowAsync<T>(DbCommand command, bool insert, int createdOrdinal, Func<DbDataReader, T> read, CancellationToken cancellationToken)
    {
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            return (false, false, default!);
        }

        var created = insert && (createdOrdinal < 0 || reader.GetBoolean(createdOrdinal));
        return (true, created, read(reader));
    }

    public static async Task<T> InsertWithUniqueSlugAsync<T>(
        DbConnection connection,
        DbTransaction? transaction,
        SqlDialect dialect,
        UniqueSlugDefinition definition,
        string name,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        CommandKeeping keeping,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(read);
        CheckValues(values, definition.Columns.Count);
        var options = definition.Options;
        var baseSlug = Slug.FromName(name, options);
        var sql = dialect == SqlDialect.PostgreSql
            ? PostgreSqlSlug.GetValue(definition, static d => SlugStatement(SqlDialect.PostgreSql, d))
            : SqliteSlug.GetValue(definition, static d => SlugStatement(SqlDialect.Sqlite, d));
        var pattern = DataLayerSql.SlugPattern(dialect, baseSlug, options.MaxLength);

        var opened = await OpenAsync(connection, cancellationToken).ConfigureAwait(false);
        var prepared = keeping.Keep && !opened && !HasParameterObjects(values) ? Prepared.GetValue(connection, static c => new PreparedCommands(c)) : null;
        DbCommand command;
        DbParameter offset;
        KeptCommand? keptCommand = null;
        if (prepared is not null)
        {
            keptCommand = prepared.Rent(connection, sql, SlugParameters(values.Count));
            command = keptCommand.Command;
            SetValues(command, values);
            command.Parameters[values.Count].Value = baseSlug;
            command.Parameters[values.Count + 1].Value = options.MaxLength;
            command.Parameters[values.Count + 2].Value = pattern;
            offset = command.Parameters[values.Count + 3];
            offset.Value = 0L; // typed before the statement is prepared
        }
        else
        {
            command = connection.CreateCommand();
            command.CommandText = sql;
            AddValues(command, values);
            Add(command, DataLayerSql.BaseParameter, baseSlug);
            Add(command, DataLayerSql.MaxLengthParameter, options.MaxLength);
            Add(command, DataLayerSql.PatternParameter, pattern);
            offset = Add(command, DataLayerSql.OffsetParameter, 0L);
        }

        var kept = false;
        try
        {
            command.Transaction = transaction;
            await PrepareAsync(command, keptCommand, keeping, dialect, cancellationToken).ConfigureAwait(false);
            for (var attempt = 0; attempt < options.MaxAttempts; attempt++)
            {
                DataLayerMetrics.SlugAttempt(definition.Table);
                offset.Value = DataLayerSql.SlugOffset(attempt);
                var row = await ReadRowAsync(command, insert: true, createdOrdinal: -1, read, cancellationToken).ConfigureAwait(false);
                if (row.Found)
                {
                    DataLayerMetrics.Created(definition.Table);
                    kept = keptCommand is not null && prepared!.Return(sql, keptCommand);
                    return row.Value;
                }

                DataLayerMetrics.ConflictResolved(definition.Table, "slug");
                if (definition.Logger is { } logger)
                {
                    DataLayerLog.SlugTaken(logger, definition.Table, baseSlug, attempt + 1);
                }
            }

            kept = keptCommand is not null && prepared!.Return(sql, keptCommand);
        }
        finally
        {
            if (!kept)
            {
                await command.DisposeAsync().ConfigureAwait(false);
            }

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

    private static string SlugStatement(SqlDialect dialect, UniqueSlugDefinition definition) =>
        DataLayerSql.InsertWithSlug(dialect, DataLayerSql.Table(definition.Table, definition.Schema), definition.SlugColumn, definition.Columns, definition.Returning);

    private static string[] SlugParameters(int values) =>
        [.. Enumerable.Range(0, values).Select(DataLayerSql.ValueParameter), DataLayerSql.BaseParameter, DataLayerSql.MaxLengthParameter, DataLayerSql.PatternParameter, DataLayerSql.OffsetParameter];

    /// <summary>
    /// A definition's statements and the parameters each takes, built once per definition and dialect, and on
    /// PostgreSQL which statement its next call sends first.
    /// </summary>
    private sealed class CreateOrGetStatements(string insert, string insertOnly, string[] insertParameters, string read, string[] readParameters)
    {
        /// <summary>The combined statement on PostgreSQL (read, then insert only when nothing was found); the plain insert on SQLite.</summary>
        public string Insert { get; } = insert;

        /// <summary><c>INSERT … ON CONFLICT (key) DO NOTHING RETURNING …</c>: a row only when it inserted.</summary>
        public string InsertOnly { get; } = insertOnly;

        /// <summary>Both inserts take one parameter per column.</summary>
        public string[] InsertParameters { get; } = insertParameters;

        /// <summary>PostgreSQL: which statement the definition's next call sends first.</summary>
        public CreateOrGetStreak Streak { get; } = new();

        /// <summary>The read by key (on PostgreSQL with a FALSE "created" column).</summary>
        public string Read { get; } = read;

        /// <summary>The read takes the key's values only.</summary>
        public string[] ReadParameters { get; } = readParameters;

        public static CreateOrGetStatements For(SqlDialect dialect, CreateOrGetDefinition d)
        {
            var table = DataLayerSql.Table(d.Table, d.Schema);
            var insert = DataLayerSql.CreateOrGet(dialect, table, d.Columns, d.KeyColumns, d.KeyOrdinals, d.Returning);
            return new(
                insert,
                dialect == SqlDialect.Sqlite ? insert : DataLayerSql.InsertOrNothing(table, d.Columns, d.KeyColumns, d.Returning), // SQLite's insert is this already
                [.. Enumerable.Range(0, d.Columns.Count).Select(DataLayerSql.ValueParameter)],
                DataLayerSql.Read(table, d.KeyColumns, d.KeyOrdinals, d.Returning, createdColumn: dialect == SqlDialect.PostgreSql),
                [.. d.KeyOrdinals.Select(DataLayerSql.ValueParameter)]);
        }
    }

    /// <summary>
    /// The commands of one connection kept prepared between calls, one per statement text (the texts are the cached
    /// strings of each definition, compared by reference). A command made per call pays for its SQL every time:
    /// Microsoft.Data.Sqlite parses and plans it (a large part of an indexed read), Npgsql parses its text and looks its
    /// prepared statement up again. A kept command skips both: Microsoft.Data.Sqlite keeps a command's statements
    /// prepared until its text or connection changes or it is disposed, Npgsql runs an explicitly prepared command as is
    /// on the physical connection it was prepared on. A command is rented for one call (so a connection misused from two
    /// threads at once never shares one) and returned after. When the connection closes it is forgotten
    /// (<see cref="OnStateChange"/>): Microsoft.Data.Sqlite disposes a connection's commands in Close, before it hands its
    /// handle back to the pool, but only those created since it opened, so a command must never outlive a close; a
    /// command rented across the close is disposed instead of returned (the generation changed). At most
    /// <see cref="MaxCommands"/> are kept per connection, so definitions built per call cannot grow it.
    /// </summary>
    private sealed class PreparedCommands
    {
        private const int MaxCommands = 32;

        private readonly Dictionary<string, KeptCommand> _idle = new(ReferenceEqualityComparer.Instance);
        private int _generation;

        public PreparedCommands(DbConnection connection) => connection.StateChange += OnStateChange;

        public KeptCommand Rent(DbConnection connection, string sql, string[] parameters)
        {
            int generation;
            lock (_idle)
            {
                generation = _generation;
                if (_idle.Remove(sql, out var idle))
                {
                    return idle;
                }
            }

            var command = connection.CreateCommand();
            command.CommandText = sql;
            foreach (var name in parameters)
            {
                var parameter = command.CreateParameter();
                parameter.ParameterName = name;
                command.Parameters.Add(parameter);
            }

            return new KeptCommand(command, generation);
        }

        /// <summary>Keeps the command for the next call; false when the caller must dispose it.</summary>
        public bool Return(string sql, KeptCommand kept)
        {
            kept.Command.Transaction = null;
            lock (_idle)
            {
                return kept.Generation == _generation && kept.Command.Connection?.State == ConnectionState.Open && _idle.Count < MaxCommands && _idle.TryAdd(sql, kept);
            }
        }

        private void OnStateChange(object? sender, StateChangeEventArgs e)
        {
            if (e.CurrentState == ConnectionState.Open)
            {
                return;
            }

            KeptCommand[] closed;
            lock (_idle)
            {
                _generation++;
                closed = [.. _idle.Values];
                _idle.Clear();
            }

            foreach (var kept in closed)
            {
                kept.Command.Dispose(); // Microsoft.Data.Sqlite: already done by Close, a no-op
            }
        }
    }

    /// <summary>A kept command, the generation of its connection it belongs to, and its parameters' value types when it was last prepared.</summary>
    private sealed class KeptCommand(DbCommand command, int generation)
    {
        public DbCommand Command { get; } = command;

        public int Generation { get; } = generation;

        private Type?[]? _preparedTypes;

        /// <summary>True when the parameters' value types differ from those it was prepared with (or it never was).</summary>
        public bool TypesChanged()
        {
            var parameters = Command.Parameters;
            if (_preparedTypes is null || _preparedTypes.Length != parameters.Count)
            {
                return true;
            }

            for (var i = 0; i < _preparedTypes.Length; i++)
            {
                if (_preparedTypes[i] != parameters[i].Value?.GetType())
                {
                    return true;
                }
            }

            return false;
        }

        public void Prepared()
        {
            var parameters = Command.Parameters;
            _preparedTypes ??= new Type?[parameters.Count];
            for (var i = 0; i < _preparedTypes.Length; i++)
            {
                _preparedTypes[i] = parameters[i].Value?.GetType();
            }
        }
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
    /// returns, so only the first call on a connection parses and plans it (as Idem's store does with its own). A kept
    /// command is prepared again only when it is not prepared on the connection's current physical connection, or its
    /// values' types changed (the server's statement has its parameters' types). A kept SQLite command is prepared once,
    /// explicitly: Microsoft.Data.Sqlite marks a command prepared only when all its statements were enumerated, which
    /// a reader disposed after its first row does not always do, and an unmarked command parses its SQL again.
    /// </summary>
    private static async ValueTask PrepareAsync(DbCommand command, KeptCommand? kept, CommandKeeping keeping, SqlDialect dialect, CancellationToken cancellationToken)
    {
        if (kept is null)
        {
            if (dialect == SqlDialect.PostgreSql)
            {
                await command.PrepareAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        else if (kept.TypesChanged() || keeping.IsPrepared?.Invoke(command) == false)
        {
            await command.PrepareAsync(cancellationToken).ConfigureAwait(false);
            kept.Prepared();
        }
    }

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

    private static bool HasParameterObjects(IReadOnlyList<object?> values)
    {
        for (var i = 0; i < values.Count; i++)
        {
            if (values[i] is DbParameter)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Sets a kept command's first parameters, one per value (no value is a DbParameter: see HasParameterObjects).</summary>
    private static void SetValues(DbCommand command, IReadOnlyList<object?> values)
    {
        for (var i = 0; i < values.Count; i++)
        {
            command.Parameters[i].Value = values[i] ?? DBNull.Value;
        }
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
