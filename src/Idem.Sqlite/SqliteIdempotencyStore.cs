using System.Collections.Concurrent;
using System.Globalization;
using System.Text.RegularExpressions;
using System.Threading.Channels;
using Microsoft.Data.Sqlite;

namespace Idem.Sqlite;

/// <summary>
/// Keeps idempotency records in a SQLite database file: the embedded default, durable, for one node (several processes
/// on one host may share the file). Every write runs inside an <c>IMMEDIATE</c> transaction in WAL mode; leases and
/// retention are judged by the <see cref="TimeProvider"/> given, stored as unix milliseconds.
/// </summary>
/// <remarks>
/// <para>
/// The schema is created on first use and versioned with <c>PRAGMA user_version</c>. Busy, locked or corrupt databases
/// surface as <see cref="SqliteException"/>; nothing is swallowed.
/// </para>
/// <para>
/// Concurrency model: each instance keeps long-lived connections with their statements prepared once. Reads (replays,
/// <see cref="GetAsync"/>, the first step of every claim) rent a read connection from a lock-free pool; WAL lets them
/// run beside the writer. Writes (claims that may win, completions, renewals, releases, purges) are queued to one
/// writer loop on one write connection, which applies every queued write in a single <c>IMMEDIATE</c> transaction
/// (group commit) and answers each caller after the commit. Each write is its own statement with its result read in
/// that transaction, so each stays atomic; if any statement of a group fails, the group is rolled back and each of its
/// writes is retried alone, so a failure is never half-applied and only fails the write that caused it.
/// </para>
/// <para>
/// Waiters are woken at once by completions and releases made through any instance in this process on the same file;
/// changes made by another process are noticed by re-reading the row every <see cref="SqliteIdempotencyStoreOptions.PollInterval"/>.
/// </para>
/// </remarks>
public sealed partial class SqliteIdempotencyStore : ITransactionalIdempotencyStore, IAsyncDisposable
{
    /// <summary>The schema version this release creates and understands, kept in <c>PRAGMA user_version</c>.</summary>
    public const int SchemaVersion = 3;

    // The most writes one group transaction applies; more wait for the next group.
    private const int MaxGroup = 256;

    // Idle read connections kept; more (from a burst) are closed when returned.
    private const int MaxIdleReaders = 16;

    private readonly string _connectionString;
    private readonly string _joinedConnectionString;
    private readonly string _databasePath;
    private readonly string _table;
    private readonly TimeSpan _pollInterval;
    private readonly TimeProvider _timeProvider;
    private readonly SharedSignals.Lease _signals;
    private readonly SqliteStatements _sql;
    private readonly ConcurrentBag<SqliteReadSession> _readers = [];
    private readonly RecentKeys _knownKeys = new();
    private readonly Channel<ISqliteWriteOperation> _writes;
    private readonly Task _writer;
    private int _idleReaders;
    private Task? _schema;
    private int _disposed;

    /// <summary>Creates a store on the system clock.</summary>
    /// <param name="options">The options; copied, so later changes have no effect.</param>
    public SqliteIdempotencyStore(SqliteIdempotencyStoreOptions options)
        : this(options, TimeProvider.System)
    {
    }

    /// <summary>Creates a store that judges leases and retention by <paramref name="timeProvider"/>.</summary>
    /// <param name="options">The options; copied, so later changes have no effect.</param>
    /// <param name="timeProvider">The clock.</param>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    public SqliteIdempotencyStore(SqliteIdempotencyStoreOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        var builder = Validate(options);

        // This instance keeps its connections open for its lifetime, so Microsoft.Data.Sqlite's pool has nothing to add.
        builder.Pooling = false;
        _connectionString = builder.ConnectionString;

        // Joined transactions open and close a connection per operation: pooled.
        builder.Pooling = true;
        _joinedConnectionString = builder.ConnectionString;
        _databasePath = builder.DataSource.StartsWith("file:", StringComparison.OrdinalIgnoreCase) ? builder.DataSource : System.IO.Path.GetFullPath(builder.DataSource);
        _timeProvider = timeProvider;
        _pollInterval = options.PollInterval;
        _table = options.TableName;
        _sql = new SqliteStatements(_table, options.BusyTimeout);
        _signals = SharedSignals.Acquire(SignalScope(builder.DataSource, _table));
        _writes = Channel.CreateUnbounded<ISqliteWriteOperation>(new UnboundedChannelOptions { SingleReader = true });
        _writer = Task.Run(WriterLoopAsync);
    }

    /// <inheritdoc />
    public async ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request.Key);
        ArgumentNullException.ThrowIfNull(request.Fingerprint);
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);

        // A key this process has never met is almost always new: straight to the writer, which decides atomically
        // and returns the blocking row when there is one. Skipping the read saves a read transaction on every first
        // request; a retry (a key now known) reads first.
        if (!_knownKeys.Remember(request.Key))
        {
            return await WriteAsync(new SqliteClaimOperation(request), cancellationToken).ConfigureAwait(false);
        }

        // Read first, without the write lock: a live row that this claim could not take over is the answer (a replay
        // or a conflict) as of a consistent snapshot. Only an absent, expired or abandoned row needs the writer, which
        // re-decides atomically in its transaction.
        var reader = RentReader();
        IdempotencyRecord? existing;
        try
        {
            existing = reader.Select(request.Key);
        }
        catch
        {
            reader.Dispose();
            throw;
        }

        ReturnReader(reader);
        if (existing is not null)
        {
            var now = _timeProvider.GetUtcNow();
            var claimable = existing.ExpiresAt <= now
                || (existing.State == IdempotencyRecordState.InFlight && existing.LeaseExpiresAt <= now
                    && string.Equals(existing.Fingerprint, request.Fingerprint, StringComparison.Ordinal));
            if (!claimable)
            {
                return new ClaimResult(existing.State == IdempotencyRecordState.Completed ? ClaimStatus.Completed : ClaimStatus.InFlight, existing);
            }
        }

        return await WriteAsync(new SqliteClaimOperation(request), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        if (!await WriteAsync(new SqliteCompleteOperation(key, ownerToken, response, retention), cancellationToken).ConfigureAwait(false))
        {
            return false;
        }

        _signals.Signals.Signal(key);
        return true;
    }

    /// <inheritdoc />
    public async ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        if (!await WriteAsync(new SqliteReleaseOperation(key, ownerToken), cancellationToken).ConfigureAwait(false))
        {
            return false;
        }

        _signals.Signals.Signal(key);
        return true;
    }

    /// <inheritdoc />
    public async ValueTask<bool> RecordPhasesAsync(string key, Guid ownerToken, ReadOnlyMemory<byte> phases, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        return await WriteAsync(new SqliteRecordPhasesOperation(key, ownerToken, phases.ToArray()), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    /// <remarks>A pooled connection to the store's file, with the store's busy timeout.</remarks>
    public async ValueTask<System.Data.Common.DbConnection> OpenConnectionAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        return _sql.Open(_joinedConnectionString);
    }

    /// <inheritdoc />
    /// <remarks>
    /// <c>BEGIN IMMEDIATE</c>: the transaction holds SQLite's one write lock from here to its commit, so every other write
    /// to the file (other requests' claims, this request's lease renewal) waits for it, up to the busy timeout. Keep
    /// slow work that needs no write before the first call, or in a phase of its own.
    /// </remarks>
    public async ValueTask<System.Data.Common.DbTransaction> BeginTransactionAsync(System.Data.Common.DbConnection connection, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        if (connection is not SqliteConnection sqlite)
        {
            throw new InvalidOperationException($"The SQLite idempotency store joins only a Microsoft.Data.Sqlite connection, not {connection.GetType().Name}.");
        }

        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        if (sqlite.State != System.Data.ConnectionState.Open)
        {
            await sqlite.OpenAsync(cancellationToken).ConfigureAwait(false);
        }

        var path = sqlite.DataSource;
        if (!string.Equals(string.IsNullOrEmpty(path) ? path : System.IO.Path.GetFullPath(path), _databasePath, StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"A joined transaction must be on the idempotency store's own database file ({_databasePath}), but the connection is on '{path}'. "
                + "Keep the business tables and the idempotency table in one SQLite file, or turn JoinedTransaction off.");
        }

        return sqlite.BeginTransaction(deferred: false);
    }

    /// <inheritdoc />
    public ValueTask<bool> CompleteAsync(System.Data.Common.DbTransaction transaction, string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);
        var (connection, sqlite) = Joined(transaction);
        var now = _timeProvider.GetUtcNow();
        using var command = connection.CreateCommand();
        command.Transaction = sqlite;
        command.CommandText = _sql.Complete;
        command.Parameters.AddWithValue("$key", key);
        command.Parameters.AddWithValue("$owner", SqliteStatements.Owner(ownerToken));
        command.Parameters.AddWithValue("$now", now.ToUnixTimeMilliseconds());
        command.Parameters.AddWithValue("$expires", (now + retention).ToUnixTimeMilliseconds());
        command.Parameters.AddWithValue("$status", response.StatusCode);
        command.Parameters.AddWithValue("$headers", StoredResponseHeaders.Encode(response.Headers));
        command.Parameters.AddWithValue("$body", response.Body.ToArray());
        command.Parameters.AddWithValue("$omitted", response.BodyOmitted ? 1 : 0);
        return ValueTask.FromResult(command.ExecuteNonQuery() != 0);
    }

    /// <inheritdoc />
    public ValueTask<bool> RecordPhasesAsync(System.Data.Common.DbTransaction transaction, string key, Guid ownerToken, ReadOnlyMemory<byte> phases, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var (connection, sqlite) = Joined(transaction);
        using var command = connection.CreateCommand();
        command.Transaction = sqlite;
        command.CommandText = _sql.RecordPhases;
        command.Parameters.AddWithValue("$key", key);
        command.Parameters.AddWithValue("$owner", SqliteStatements.Owner(ownerToken));
        command.Parameters.AddWithValue("$now", _timeProvider.GetUtcNow().ToUnixTimeMilliseconds());
        command.Parameters.AddWithValue("$phases", phases.ToArray());
        return ValueTask.FromResult(command.ExecuteNonQuery() != 0);
    }

    /// <inheritdoc />
    public void OnCompletionCommitted(string key) => _signals.Signals.Signal(key);

    /// <inheritdoc />
    /// <remarks>
    /// While the joined transaction holds the file's write lock, a write through another connection cannot commit: it
    /// waits for that connection's busy timeout (<c>Default Timeout</c>, 30 s unless set lower) and fails with
    /// <c>SQLITE_BUSY</c>. Idem answers that failure with this clear error instead, and rolls everything back: nothing of
    /// the request stays. Not seen: a write through another connection before the joined transaction began (it commits
    /// on its own), and the wait itself, which is the other connection's to shorten.
    /// </remarks>
    public void ThrowIfWrittenOutside(IdempotentExecution execution, Exception? failure)
    {
        ArgumentNullException.ThrowIfNull(execution);
        if (failure is SqliteException { SqliteErrorCode: 5 or 6 } busy // SQLITE_BUSY, SQLITE_LOCKED
            && execution.Transaction is SqliteTransaction { Connection: { } joined }
            && string.Equals(System.IO.Path.GetFullPath(joined.DataSource), _databasePath, StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"The operation tried to write to the idempotency store's SQLite file ({_databasePath}) through another connection while its joined "
                + "transaction held the file's write lock, and that write failed after its busy timeout (database is locked). Under a joined transaction "
                + "write only through the transaction Idem hands out (IdempotentExecution.GetTransactionAsync, or a DbContext joined with "
                + "JoinIdempotentTransactionAsync / AddIdempotencyJoinedTransaction), or turn JoinedTransaction off for this operation. Nothing was committed.",
                busy);
        }
    }

    /// <inheritdoc />
    public bool IsCompleted(System.Data.Common.DbTransaction transaction) => transaction is not SqliteTransaction { Connection: not null };

    private static (SqliteConnection Connection, SqliteTransaction Transaction) Joined(System.Data.Common.DbTransaction transaction)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        if (transaction is not SqliteTransaction { Connection: { } connection } sqlite)
        {
            throw new InvalidOperationException("The joined transaction is not an open Microsoft.Data.Sqlite transaction (it was committed or rolled back, or comes from another provider).");
        }

        return (connection, sqlite);
    }

    /// <inheritdoc />
    public async ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        return await WriteAsync(new SqliteRenewOperation(key, ownerToken, lease), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);

        var reader = RentReader();
        IdempotencyRecord? record;
        try
        {
            record = reader.Get(key, _timeProvider.GetUtcNow().ToUnixTimeMilliseconds());
        }
        catch
        {
            reader.Dispose();
            throw;
        }

        ReturnReader(reader);
        return record;
    }

    /// <inheritdoc />
    public async ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxRecords);
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        return await WriteAsync(new SqlitePurgeOperation(maxRecords), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

        var infinite = timeout == Timeout.InfiniteTimeSpan;
        var started = _timeProvider.GetTimestamp();
        while (true)
        {
            var remaining = infinite ? Timeout.InfiniteTimeSpan : timeout - _timeProvider.GetElapsedTime(started);
            if (!infinite && remaining <= TimeSpan.Zero)
            {
                return;
            }

            // Each slice registers for the in-process signal, then re-reads the row: a change before registration
            // is seen by the read, one after it by the signal; another process's change by the next slice's read.
            var slice = _pollInterval == Timeout.InfiniteTimeSpan || (!infinite && remaining < _pollInterval) ? remaining : _pollInterval;
            var changed = false;
            var sliceStarted = _timeProvider.GetTimestamp();
            await _signals.Signals.WaitAsync(
                key,
                async ct => changed = await HasChangedAsync(key, observedOwner, ct).ConfigureAwait(false),
                slice,
                _timeProvider,
                cancellationToken).ConfigureAwait(false);

            if (changed || slice == Timeout.InfiniteTimeSpan || _timeProvider.GetElapsedTime(sliceStarted) < slice)
            {
                // Changed, or woken by a signal before the slice ran out (early returns are allowed: the caller re-checks).
                return;
            }
        }
    }

    /// <summary>
    /// Closes this instance: writes already queued are still applied (or failed), then its connections are closed.
    /// Operations started afterwards throw <see cref="ObjectDisposedException"/>.
    /// </summary>
    /// <returns>A task that completes when the queued writes are answered and the connections closed.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _writes.Writer.TryComplete();
        await _writer.ConfigureAwait(false);
        DrainReaders();
        _signals.Release();
    }

    internal static SqliteConnectionStringBuilder Validate(SqliteIdempotencyStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrWhiteSpace(options.Path) && string.IsNullOrWhiteSpace(options.ConnectionString))
        {
            throw new ArgumentException($"Set {nameof(SqliteIdempotencyStoreOptions.Path)} or {nameof(SqliteIdempotencyStoreOptions.ConnectionString)}.", nameof(options));
        }

        if (options.BusyTimeout < TimeSpan.FromMilliseconds(1) || options.BusyTimeout > TimeSpan.FromMinutes(10))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.BusyTimeout, $"{nameof(SqliteIdempotencyStoreOptions.BusyTimeout)} must be from 1 ms to 10 minutes.");
        }

        if (options.PollInterval <= TimeSpan.Zero && options.PollInterval != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.PollInterval, $"{nameof(SqliteIdempotencyStoreOptions.PollInterval)} must be positive or infinite.");
        }

        if (options.TableName is null || !IdentifierPattern().IsMatch(options.TableName))
        {
            throw new ArgumentException($"{nameof(SqliteIdempotencyStoreOptions.TableName)} '{options.TableName}' must be letters, digits and underscores, starting with a letter or underscore.", nameof(options));
        }

        var builder = new SqliteConnectionStringBuilder(options.ConnectionString ?? string.Empty);
        if (!string.IsNullOrWhiteSpace(options.Path))
        {
            builder.DataSource = options.Path;
        }

        if (string.IsNullOrWhiteSpace(builder.DataSource)
            || builder.DataSource.Equals(":memory:", StringComparison.OrdinalIgnoreCase)
            || builder.Mode == SqliteOpenMode.Memory)
        {
            throw new ArgumentException("The SQLite store needs a database file; in-memory databases are not supported.", nameof(options));
        }

        if (builder.Mode == SqliteOpenMode.ReadOnly)
        {
            throw new ArgumentException("The SQLite store writes; a read-only connection is not supported.", nameof(options));
        }

        builder.Pooling = true;

        // Microsoft.Data.Sqlite retries busy statements itself for the command timeout; keep it to the busy timeout.
        builder.DefaultTimeout = (int)Math.Ceiling(options.BusyTimeout.TotalSeconds);
        return builder;
    }

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]{0,127}$", RegexOptions.CultureInvariant)]
    private static partial Regex IdentifierPattern();

    private static string Quote(string identifier) => "\"" + identifier + "\"";

    private async ValueTask<T> WriteAsync<T>(SqliteWriteOperation<T> operation, CancellationToken cancellationToken)
    {
        operation.Watch(cancellationToken);
        ObjectDisposedException.ThrowIf(!_writes.Writer.TryWrite(operation), this);

        return await operation.Task.ConfigureAwait(false);
    }

    private ValueTask<bool> HasChangedAsync(string key, Guid observedOwner, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var reader = RentReader();
        bool changed;
        try
        {
            changed = reader.HasChanged(key, observedOwner, _timeProvider);
        }
        catch
        {
            reader.Dispose();
            throw;
        }

        ReturnReader(reader);
        return ValueTask.FromResult(changed);
    }

    // Microsoft.Data.Sqlite runs every statement synchronously (its async methods only wrap the sync ones), so the
    // sessions call the sync methods directly and spare the Task per call.
    private SqliteReadSession RentReader()
    {
        if (_readers.TryTake(out var reader))
        {
            Interlocked.Decrement(ref _idleReaders);
            return reader;
        }

        return new SqliteReadSession(_sql, _connectionString);
    }

    private void ReturnReader(SqliteReadSession reader)
    {
        if (Volatile.Read(ref _disposed) != 0 || Interlocked.Increment(ref _idleReaders) > MaxIdleReaders)
        {
            if (Volatile.Read(ref _disposed) == 0)
            {
                Interlocked.Decrement(ref _idleReaders);
            }

            reader.Dispose();
            return;
        }

        _readers.Add(reader);

        // Returned while DisposeAsync drained the pool: drain again so nothing is left open.
        if (Volatile.Read(ref _disposed) != 0)
        {
            DrainReaders();
        }
    }

    private void DrainReaders()
    {
        while (_readers.TryTake(out var reader))
        {
            reader.Dispose();
        }
    }

    private async Task WriterLoopAsync()
    {
        SqliteWriteSession? session = null;
        var group = new List<ISqliteWriteOperation>(MaxGroup);
        var started = new List<ISqliteWriteOperation>(MaxGroup);
        try
        {
            while (await _writes.Reader.WaitToReadAsync().ConfigureAwait(false))
            {
                while (group.Count < MaxGroup && _writes.Reader.TryRead(out var operation))
                {
                    group.Add(operation);
                }

                try
                {
                    session ??= new SqliteWriteSession(_sql, _connectionString);
                    ApplyGroup(session, group, started);
                }
                catch (Exception ex)
                {
                    // Opening the connection failed, the write lock could not be taken, or a rollback failed: nothing
                    // was applied (closing the connection rolls back whatever it held). Answered writes are unaffected.
                    foreach (var operation in group)
                    {
                        operation.Fail(ex);
                    }

                    session?.Dispose();
                    session = null;
                }

                group.Clear();
                started.Clear();
            }
        }
        finally
        {
            session?.Dispose();
        }
    }

    private void ApplyGroup(SqliteWriteSession session, List<ISqliteWriteOperation> group, List<ISqliteWriteOperation> started)
    {
        // Takes the write lock, waiting up to busy_timeout (a failure here applied nothing and fails the group);
        // callers who give up meanwhile are skipped below and their writes never applied.
        session.Begin();
        Exception? error = null;
        try
        {
            foreach (var operation in group)
            {
                if (operation.TryStart())
                {
                    started.Add(operation);
                    operation.Execute(session, _timeProvider);
                }
            }

            session.Commit();
        }
        catch (Exception ex)
        {
            error = ex;
            session.RollbackIfOpen();
        }

        if (error is null)
        {
            foreach (var operation in started)
            {
                operation.Publish();
            }

            return;
        }

        // Nothing of the group was applied. Writes not reached yet are still pending: take them too.
        foreach (var operation in group)
        {
            if (operation.TryStart())
            {
                started.Add(operation);
            }
        }

        if (started.Count == 1)
        {
            started[0].Fail(error);
            return;
        }

        // Apply each write alone, so only the one that fails is failed.
        foreach (var operation in started)
        {
            ApplyAlone(session, operation);
        }
    }

    private void ApplyAlone(SqliteWriteSession session, ISqliteWriteOperation operation)
    {
        try
        {
            session.Begin();
            try
            {
                operation.Execute(session, _timeProvider);
                session.Commit();
            }
            catch
            {
                session.RollbackIfOpen();
                throw;
            }
        }
        catch (Exception ex)
        {
            operation.Fail(ex);
            return;
        }

        operation.Publish();
    }

    private async ValueTask EnsureReadyAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var schema = Volatile.Read(ref _schema);
        if (schema is null || !schema.IsCompletedSuccessfully)
        {
            await EnsureSchemaAsync(schema, cancellationToken).ConfigureAwait(false);
        }
    }


    private static string SignalScope(string dataSource, string table)
    {
        var file = dataSource.StartsWith("file:", StringComparison.OrdinalIgnoreCase) ? dataSource : System.IO.Path.GetFullPath(dataSource);
        return file + "\n" + table;
    }

    private Task EnsureSchemaAsync(Task? observed, CancellationToken cancellationToken)
    {
        // One creation at a time per instance; a failed one is retried by the next operation. Creation is safe to
        // race anyway (other instances, other processes): it runs in an IMMEDIATE transaction and is idempotent.
        var current = observed;
        if (current is null || current.IsFaulted || current.IsCanceled)
        {
            var attempt = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var winner = Interlocked.CompareExchange(ref _schema, attempt.Task, current);
            if (winner == current)
            {
                _ = CreateSchemaAsync(attempt);
                current = attempt.Task;
            }
            else
            {
                current = winner!;
            }
        }

        return current.WaitAsync(cancellationToken);
    }

    private static SqliteCommand Command(SqliteConnection connection, SqliteTransaction? transaction, string sql)
    {
        var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        return command;
    }

    private async Task CreateSchemaAsync(TaskCompletionSource attempt)
    {
        try
        {
            await CreateSchemaAsync().ConfigureAwait(false);
            attempt.SetResult();
        }
        catch (Exception ex)
        {
            attempt.SetException(ex);
        }
    }

    private async Task CreateSchemaAsync()
    {
        var connection = _sql.Open(_connectionString);
        await using (connection.ConfigureAwait(false))
        {
            // WAL is a property of the file; switching needs no other connection to be mid-transaction (busy_timeout waits).
            using (var wal = Command(connection, null, "PRAGMA journal_mode = WAL;"))
            {
                var mode = Convert.ToString(await wal.ExecuteScalarAsync().ConfigureAwait(false), CultureInfo.InvariantCulture);
                if (!string.Equals(mode, "wal", StringComparison.OrdinalIgnoreCase))
                {
                    throw new InvalidOperationException($"The SQLite database could not be switched to WAL mode (journal mode is '{mode}').");
                }
            }

            using var transaction = connection.BeginTransaction(deferred: false);
            long version;
            using (var read = Command(connection, transaction, "PRAGMA user_version;"))
            {
                version = Convert.ToInt64(await read.ExecuteScalarAsync().ConfigureAwait(false), CultureInfo.InvariantCulture);
            }

            if (version > SchemaVersion)
            {
                throw new InvalidOperationException(
                    $"The SQLite database has Idem schema version {version}; this release understands up to {SchemaVersion}. Upgrade Idem.Sqlite.");
            }

            var t = Quote(_table);
            if (version == 1)
            {
                // Version 2: recovery points of in-flight keys.
                using var upgrade = Command(connection, transaction, $"ALTER TABLE {t} ADD COLUMN phases BLOB NULL;");
                await upgrade.ExecuteNonQueryAsync().ConfigureAwait(false);
            }

            if (version is 1 or 2)
            {
                // Version 3: who claimed and for which operation (the principal only as its hash), for idem keys list.
                // Rows written before keep NULL: they replay as before and match no principal or route filter.
                using var upgrade = Command(connection, transaction, $"ALTER TABLE {t} ADD COLUMN principal_hash TEXT NULL; ALTER TABLE {t} ADD COLUMN operation TEXT NULL;");
                await upgrade.ExecuteNonQueryAsync().ConfigureAwait(false);
            }

            using (var create = Command(connection, transaction, $"""
                CREATE TABLE IF NOT EXISTS {t} (
                    key TEXT NOT NULL PRIMARY KEY,
                    state INTEGER NOT NULL,
                    fingerprint TEXT NOT NULL,
                    owner BLOB NOT NULL,
                    lease_expires_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    status_code INTEGER NULL,
                    headers BLOB NULL,
                    body BLOB NULL,
                    body_omitted INTEGER NOT NULL DEFAULT 0,
                    took_over INTEGER NOT NULL DEFAULT 0,
                    phases BLOB NULL,
                    principal_hash TEXT NULL,
                    operation TEXT NULL
                );
                CREATE INDEX IF NOT EXISTS {Quote("ix_" + _table + "_expires_at")} ON {t} (expires_at);
                PRAGMA user_version = {SchemaVersion};
                """))
            {
                await create.ExecuteNonQueryAsync().ConfigureAwait(false);
            }

            await transaction.CommitAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Signals shared by every instance in this process on the same file and table, so a completion through one
    /// instance wakes waiters of another at once.
    /// </summary>
    private static class SharedSignals
    {
        private static readonly Dictionary<string, Lease> s_scopes = new(StringComparer.Ordinal);

        public static Lease Acquire(string scope)
        {
            lock (s_scopes)
            {
                if (!s_scopes.TryGetValue(scope, out var lease))
                {
                    lease = new Lease(scope);
                    s_scopes.Add(scope, lease);
                }

                lease.References++;
                return lease;
            }
        }

        public sealed class Lease(string scope)
        {
            public KeyChangeSignals Signals { get; } = new();

            public int References { get; set; }

            /// <summary>Returns <see langword="true"/> when this was the last instance on the scope.</summary>
            public bool Release()
            {
                lock (s_scopes)
                {
                    if (--References > 0)
                    {
                        return false;
                    }

                    s_scopes.Remove(scope);
                    return true;
                }
            }
        }
    }
}
