using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;

namespace Idem.Sqlite;

/// <summary>
/// Keeps idempotency records in a SQLite database file: the embedded default, durable, for one node (several processes
/// on one host may share the file). Every step is one statement or one <c>IMMEDIATE</c> transaction in WAL mode;
/// leases and retention are judged by the <see cref="TimeProvider"/> given, stored as unix milliseconds.
/// </summary>
/// <remarks>
/// The schema is created on first use and versioned with <c>PRAGMA user_version</c>. Each operation opens a pooled
/// connection. Busy, locked or corrupt databases surface as <see cref="SqliteException"/>; nothing is swallowed.
/// Waiters are woken at once by completions and releases made through any instance in this process on the same file;
/// changes made by another process are noticed by re-reading the row every <see cref="SqliteIdempotencyStoreOptions.PollInterval"/>.
/// </remarks>
public sealed partial class SqliteIdempotencyStore : IIdempotencyStore, IAsyncDisposable
{
    /// <summary>The schema version this release creates and understands, kept in <c>PRAGMA user_version</c>.</summary>
    public const int SchemaVersion = 1;

    private const int InFlight = (int)IdempotencyRecordState.InFlight;
    private const int Completed = (int)IdempotencyRecordState.Completed;
    private const string Columns = "key, state, fingerprint, owner, lease_expires_at, expires_at, status_code, headers, body, body_omitted";

    private readonly string _connectionString;
    private readonly string _pragmas;
    private readonly string _table;
    private readonly TimeSpan _pollInterval;
    private readonly TimeProvider _timeProvider;
    private readonly SharedSignals.Lease _signals;
    private readonly string _claimSql, _selectSql, _getSql, _completeSql, _renewSql, _releaseSql, _purgeSql, _stateSql;
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
        _connectionString = builder.ConnectionString;
        _timeProvider = timeProvider;
        _pollInterval = options.PollInterval;
        _pragmas = string.Create(
            CultureInfo.InvariantCulture,
            $"PRAGMA busy_timeout = {(long)Math.Ceiling(options.BusyTimeout.TotalMilliseconds)}; PRAGMA synchronous = NORMAL;");
        _table = options.TableName;
        _signals = SharedSignals.Acquire(SignalScope(builder.DataSource, _table));

        var t = Quote(_table);
        _claimSql = $"""
            INSERT INTO {t} (key, state, fingerprint, owner, lease_expires_at, expires_at, body_omitted, took_over)
            VALUES ($key, {InFlight}, $fingerprint, $owner, $lease, $expires, 0, 0)
            ON CONFLICT (key) DO UPDATE SET
                state = {InFlight}, fingerprint = excluded.fingerprint, owner = excluded.owner,
                lease_expires_at = excluded.lease_expires_at, expires_at = excluded.expires_at,
                status_code = NULL, headers = NULL, body = NULL, body_omitted = 0,
                took_over = {t}.expires_at > $now
            WHERE {t}.expires_at <= $now
               OR ({t}.state = {InFlight} AND {t}.lease_expires_at <= $now AND {t}.fingerprint = excluded.fingerprint)
            RETURNING took_over;
            """;
        _selectSql = $"SELECT {Columns} FROM {t} WHERE key = $key;";
        _getSql = $"SELECT {Columns} FROM {t} WHERE key = $key AND expires_at > $now;";
        _stateSql = $"SELECT state, owner, lease_expires_at, expires_at FROM {t} WHERE key = $key;";
        _completeSql = $"""
            UPDATE {t} SET state = {Completed}, expires_at = $expires, status_code = $status, headers = $headers, body = $body, body_omitted = $omitted
            WHERE key = $key AND owner = $owner AND state = {InFlight} AND expires_at > $now;
            """;
        _renewSql = $"UPDATE {t} SET lease_expires_at = $lease WHERE key = $key AND owner = $owner AND state = {InFlight} AND expires_at > $now;";
        _releaseSql = $"DELETE FROM {t} WHERE key = $key AND owner = $owner AND state = {InFlight};";
        _purgeSql = $"DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE expires_at <= $now LIMIT $max);";
    }

    /// <inheritdoc />
    public async ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request.Key);
        ArgumentNullException.ThrowIfNull(request.Fingerprint);
        cancellationToken.ThrowIfCancellationRequested();

        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            // IMMEDIATE: the write lock is taken up front (waiting up to busy_timeout), so the upsert and the read of
            // what blocked it see one state, and no reader-to-writer upgrade can fail with a stale snapshot.
            using var transaction = connection.BeginTransaction(deferred: false);
            var now = _timeProvider.GetUtcNow();
            var nowMs = now.ToUnixTimeMilliseconds();
            var leaseExpiresAt = now + request.Lease;
            var expiresAt = now + request.Retention;

            bool? tookOver;
            using (var claim = Command(connection, transaction, _claimSql))
            {
                claim.Parameters.AddWithValue("$key", request.Key);
                claim.Parameters.AddWithValue("$fingerprint", request.Fingerprint);
                AddOwner(claim, request.OwnerToken);
                claim.Parameters.AddWithValue("$lease", leaseExpiresAt.ToUnixTimeMilliseconds());
                claim.Parameters.AddWithValue("$expires", expiresAt.ToUnixTimeMilliseconds());
                claim.Parameters.AddWithValue("$now", nowMs);
                var returned = await claim.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
                tookOver = returned is null or DBNull ? null : Convert.ToInt64(returned, CultureInfo.InvariantCulture) != 0;
            }

            ClaimResult result;
            if (tookOver is { } takeover)
            {
                var record = new IdempotencyRecord
                {
                    Key = request.Key,
                    State = IdempotencyRecordState.InFlight,
                    Fingerprint = request.Fingerprint,
                    OwnerToken = request.OwnerToken,
                    LeaseExpiresAt = FromMilliseconds(leaseExpiresAt.ToUnixTimeMilliseconds()),
                    ExpiresAt = FromMilliseconds(expiresAt.ToUnixTimeMilliseconds()),
                };
                result = new ClaimResult(ClaimStatus.Claimed, record, takeover);
            }
            else
            {
                // The row that blocked the claim: live, and either completed or in flight under someone else's lease.
                using var select = Command(connection, transaction, _selectSql);
                select.Parameters.AddWithValue("$key", request.Key);
                var existing = await ReadRecordAsync(select, cancellationToken).ConfigureAwait(false)
                    ?? throw new InvalidOperationException($"The claim of key '{request.Key}' was refused, yet no record was found in the same transaction.");
                result = new ClaimResult(existing.State == IdempotencyRecordState.Completed ? ClaimStatus.Completed : ClaimStatus.InFlight, existing);
            }

            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            return result;
        }
    }

    /// <inheritdoc />
    public async ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);
        cancellationToken.ThrowIfCancellationRequested();

        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var now = _timeProvider.GetUtcNow();
            using var command = Command(connection, null, _completeSql);
            command.Parameters.AddWithValue("$key", key);
            AddOwner(command, ownerToken);
            command.Parameters.AddWithValue("$now", now.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$expires", (now + retention).ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$status", response.StatusCode);
            command.Parameters.AddWithValue("$headers", ResponseCodec.EncodeHeaders(response.Headers));
            command.Parameters.AddWithValue("$body", AsArray(response.Body));
            command.Parameters.AddWithValue("$omitted", response.BodyOmitted ? 1 : 0);
            if (await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 0)
            {
                return false;
            }
        }

        _signals.Signals.Signal(key);
        return true;
    }

    /// <inheritdoc />
    public async ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();

        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = Command(connection, null, _releaseSql);
            command.Parameters.AddWithValue("$key", key);
            AddOwner(command, ownerToken);
            if (await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 0)
            {
                return false;
            }
        }

        _signals.Signals.Signal(key);
        return true;
    }

    /// <inheritdoc />
    public async ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();

        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var now = _timeProvider.GetUtcNow();
            using var command = Command(connection, null, _renewSql);
            command.Parameters.AddWithValue("$key", key);
            AddOwner(command, ownerToken);
            command.Parameters.AddWithValue("$now", now.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$lease", (now + lease).ToUnixTimeMilliseconds());
            return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) != 0;
        }
    }

    /// <inheritdoc />
    public async ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();

        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = Command(connection, null, _getSql);
            command.Parameters.AddWithValue("$key", key);
            command.Parameters.AddWithValue("$now", _timeProvider.GetUtcNow().ToUnixTimeMilliseconds());
            return await ReadRecordAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxRecords);
        cancellationToken.ThrowIfCancellationRequested();

        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = Command(connection, null, _purgeSql);
            command.Parameters.AddWithValue("$now", _timeProvider.GetUtcNow().ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$max", maxRecords);
            return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
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

    /// <summary>Closes this instance; idle pooled connections to the file are closed when the last instance on it goes.</summary>
    /// <returns>A completed task.</returns>
    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0 && _signals.Release())
        {
            using var connection = new SqliteConnection(_connectionString);
            SqliteConnection.ClearPool(connection);
        }

        return ValueTask.CompletedTask;
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

    private static string SignalScope(string dataSource, string table)
    {
        var file = dataSource.StartsWith("file:", StringComparison.OrdinalIgnoreCase) ? dataSource : System.IO.Path.GetFullPath(dataSource);
        return file + "\n" + table;
    }

    private static DateTimeOffset FromMilliseconds(long milliseconds) => DateTimeOffset.FromUnixTimeMilliseconds(milliseconds);

    private static byte[] AsArray(ReadOnlyMemory<byte> memory) =>
        MemoryMarshal.TryGetArray(memory, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : memory.ToArray();

    // 16 bytes (Guid.ToByteArray order); Microsoft.Data.Sqlite would otherwise bind a Guid as 36 characters of text.
    private static void AddOwner(SqliteCommand command, Guid owner) =>
        command.Parameters.Add("$owner", SqliteType.Blob).Value = owner.ToByteArray();

    private static SqliteCommand Command(SqliteConnection connection, SqliteTransaction? transaction, string sql)
    {
        var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        return command;
    }

    private static async ValueTask<IdempotencyRecord?> ReadRecordAsync(SqliteCommand command, CancellationToken cancellationToken)
    {
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                return null;
            }

            var state = (IdempotencyRecordState)reader.GetInt32(1);
            StoredResponse? response = null;
            if (state == IdempotencyRecordState.Completed)
            {
                var headers = reader.IsDBNull(7) ? [] : ResponseCodec.DecodeHeaders(reader.GetFieldValue<byte[]>(7));
                var body = reader.IsDBNull(8) ? [] : reader.GetFieldValue<byte[]>(8);
                response = new StoredResponse(reader.GetInt32(6), headers, body) { BodyOmitted = reader.GetInt64(9) != 0 };
            }

            return new IdempotencyRecord
            {
                Key = reader.GetString(0),
                State = state,
                Fingerprint = reader.GetString(2),
                OwnerToken = reader.GetGuid(3),
                LeaseExpiresAt = FromMilliseconds(reader.GetInt64(4)),
                ExpiresAt = FromMilliseconds(reader.GetInt64(5)),
                Response = response,
            };
        }
    }

    private async ValueTask<bool> HasChangedAsync(string key, Guid observedOwner, CancellationToken cancellationToken)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = Command(connection, null, _stateSql);
            command.Parameters.AddWithValue("$key", key);
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    return true;
                }

                var now = _timeProvider.GetUtcNow().ToUnixTimeMilliseconds();
                return reader.GetInt32(0) != InFlight
                    || reader.GetGuid(1) != observedOwner
                    || reader.GetInt64(2) <= now
                    || reader.GetInt64(3) <= now;
            }
        }
    }

    private async ValueTask<SqliteConnection> OpenAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var schema = Volatile.Read(ref _schema);
        if (schema is null || !schema.IsCompletedSuccessfully)
        {
            await EnsureSchemaAsync(schema, cancellationToken).ConfigureAwait(false);
        }

        return await OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask<SqliteConnection> OpenConnectionAsync(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_connectionString);
        try
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            using var pragmas = Command(connection, null, _pragmas);
            await pragmas.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
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
        var connection = await OpenConnectionAsync(CancellationToken.None).ConfigureAwait(false);
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
                    took_over INTEGER NOT NULL DEFAULT 0
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
