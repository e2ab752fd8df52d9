using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Idem.PostgreSql;

/// <summary>
/// An <see cref="IIdempotencyStore"/> on PostgreSQL: the durable authority for many nodes. Claim, complete, renew and
/// release are one statement (one round trip) each; leases and retention are judged by the server's clock
/// (<c>clock_timestamp()</c>), never by the nodes'. Completions and releases of keys someone waits for are announced
/// with <c>NOTIFY</c> and heard by one shared <c>LISTEN</c> connection per store instance, which reconnects by itself;
/// while it is down, waiters simply time out and the executor polls. Deletions (<see cref="DeleteAsync"/>) are announced
/// on the same channel for <see cref="SubscribeToDeletions"/>.
/// </summary>
public sealed partial class PostgreSqlIdempotencyStore : ITransactionalIdempotencyStore, IIdempotencyDeletionNotifier, IAsyncDisposable, IDisposable
{
    // What the batched completion fails with when the owner lost the key (see _completeForCommitSql).
    private const string LostClaimMarker = "idem: this owner no longer holds the key";
    private const string Columns = "state, fingerprint, owner_token, took_over, lease_expires_at, expires_at, status_code, headers, body, body_omitted, phases, principal_hash, operation";
    private const int MaxClaimAttempts = 16;

    private readonly PostgreSqlIdempotencyStoreOptions _options;
    private readonly NpgsqlDataSource _dataSource;
    private readonly NpgsqlDataSource _listenerDataSource;
    private NpgsqlDataSource? _joinedDataSource;
    private readonly bool _multiplexing;
    private readonly bool _ownsDataSource;
    private readonly ILogger _logger;
    private readonly KeyChangeSignals _signals = new();
    private readonly DeletionSubscribers _deletionSubscribers = new();
    private readonly CancellationTokenSource _disposing = new();
    private readonly Task _listener;
    private readonly string _claimSql, _completeSql, _completeForCommitSql, _releaseSql, _renewSql, _getSql, _isUnchangedSql, _purgeSql, _recordPhasesSql;
    private Task? _schemaReady;
    private volatile int _listenerProcessId;

    // Completed while a LISTEN is up; replaced by a pending one when the listener loses its connection. A wait that began
    // while no LISTEN was up would miss the NOTIFY of a change committed before the listener is back.
    private TaskCompletionSource _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _disposed;
    private long _staleSnapshotRetries;
    private long _listenerHealthChecks;

    /// <summary>Creates a store and starts its notification listener.</summary>
    /// <param name="options">The options; validated here.</param>
    /// <param name="loggerFactory">Where the listener logs its disconnects; none when <see langword="null"/>.</param>
    public PostgreSqlIdempotencyStore(PostgreSqlIdempotencyStoreOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options.Clone();
        _logger = loggerFactory?.CreateLogger<PostgreSqlIdempotencyStore>() ?? NullLogger<PostgreSqlIdempotencyStore>.Instance;
        if (_options.DataSource is { } dataSource)
        {
            _dataSource = dataSource;
            _multiplexing = new NpgsqlConnectionStringBuilder(dataSource.ConnectionString).Multiplexing;
            if (_multiplexing)
            {
                // LISTEN needs a connection of its own, which a multiplexing data source never hands out.
                throw new InvalidOperationException(
                    "The PostgreSQL idempotency store needs a data source without multiplexing for its LISTEN connection; "
                    + "pass a ConnectionString instead (Multiplexing=true in it multiplexes the store's statements only) or a data source without Multiplexing.");
            }

            _listenerDataSource = dataSource;
        }
        else
        {
            (_dataSource, _listenerDataSource) = CreateDataSources(_options.ConnectionString!);
            _multiplexing = new NpgsqlConnectionStringBuilder(_dataSource.ConnectionString).Multiplexing;
            _ownsDataSource = true;
        }

        OutsideWriteWatch.Start(); // joined operations' writes through other connections are seen, and refused
        var table = PostgreSqlIdempotencyMigrator.Quote(_options.SchemaName) + "." + PostgreSqlIdempotencyMigrator.Quote(_options.TableName);

        // $1 key, $2 fingerprint, $3 owner, $4 lease, $5 retention, $6 principal hash, $7 operation (metadata; may be NULL).
        // `cur` reads the row without locking it, so a replay or a live in-flight record costs one index read and no write.
        // Otherwise the INSERT claims a free key, replaces a record past retention or takes over an expired lease with the
        // same fingerprint. Outcome 1 = claimed, 2 = the record that stands, 0 = the snapshot is stale: the INSERT met a
        // row committed after this statement's snapshot (READ COMMITTED) that it may not take, so the caller runs the
        // statement again with a fresh snapshot.
        _claimSql = $"""
            WITH cur AS (
                SELECT {Columns},
                       (expires_at <= clock_timestamp()
                        OR (state = 'in_flight' AND lease_expires_at <= clock_timestamp() AND fingerprint = $2)) AS claimable
                FROM {table} WHERE key = $1
            ), ins AS (
                INSERT INTO {table} AS r (key, state, fingerprint, owner_token, took_over, lease_expires_at, expires_at, purge_after, principal_hash, operation)
                SELECT $1, 'in_flight', $2, $3, false, clock_timestamp() + $4, clock_timestamp() + $5, clock_timestamp() + $5, $6, $7
                WHERE NOT EXISTS (SELECT 1 FROM cur WHERE NOT cur.claimable)
                ON CONFLICT (key) DO UPDATE SET
                    state = 'in_flight', fingerprint = EXCLUDED.fingerprint, owner_token = EXCLUDED.owner_token,
                    took_over = r.expires_at > clock_timestamp(), has_waiters = false,
                    principal_hash = EXCLUDED.principal_hash, operation = EXCLUDED.operation,
                    lease_expires_at = clock_timestamp() + $4, expires_at = clock_timestamp() + $5, purge_after = clock_timestamp() + $5,
                    status_code = NULL, headers = NULL, body = NULL, body_omitted = false,
                    phases = CASE WHEN r.expires_at <= clock_timestamp() THEN NULL ELSE r.phases END
                WHERE r.expires_at <= clock_timestamp()
                   OR (r.state = 'in_flight' AND r.lease_expires_at <= clock_timestamp() AND r.fingerprint = EXCLUDED.fingerprint)
                RETURNING {Columns}
            )
            SELECT 1, {Columns} FROM ins
            UNION ALL
            SELECT CASE WHEN claimable THEN 0 ELSE 2 END, {Columns} FROM cur WHERE NOT EXISTS (SELECT 1 FROM ins)
            """;

        // $1 key, $2 owner, $3 retention, $4 status, $5 headers, $6 body, $7 body omitted, $8 channel.
        // purge_after (the only indexed column besides the key) stays as the claim set it unless the new retention ends
        // earlier, so the UPDATE is normally HOT: no index entries, no new page.
        var completeUpdate = $"""
            UPDATE {table} SET state = 'completed', expires_at = clock_timestamp() + $3,
                    purge_after = LEAST(purge_after, clock_timestamp() + $3),
                    status_code = $4, headers = $5, body = $6, body_omitted = $7, phases = NULL
                WHERE key = $1 AND owner_token = $2 AND state = 'in_flight' AND expires_at > clock_timestamp()
                RETURNING key, has_waiters
            """;
        _completeSql = $"""
            WITH done AS (
                {completeUpdate}
            )
            SELECT CASE WHEN has_waiters THEN pg_notify($8, key)::text END FROM done
            """;

        // The same completion, sent in one batch with COMMIT: when it matches no row (the owner lost the key) it must
        // fail, so that PostgreSQL aborts the transaction and skips the COMMIT. Plain SQL cannot raise, so an aggregate
        // over the completed rows casts a marker to integer when there is none; the CASE depends on count(*), so the
        // planner cannot fold the cast early and it fails only at run time, only on a lost claim.
        _completeForCommitSql = $"""
            WITH done AS (
                {completeUpdate}
            )
            SELECT CAST(CASE WHEN count(*) = 0 THEN '{LostClaimMarker}' END AS integer),
                max(CASE WHEN has_waiters THEN pg_notify($8, key)::text END)
            FROM done
            """;

        // $1 key, $2 owner, $3 channel. A record with recovery points is not deleted: its lease ends, so the retry takes
        // it over and resumes after the last finished phase.
        _releaseSql = $"""
            WITH gone AS (
                DELETE FROM {table} WHERE key = $1 AND owner_token = $2 AND state = 'in_flight' AND phases IS NULL
                RETURNING key, has_waiters
            ), ended AS (
                UPDATE {table} SET lease_expires_at = clock_timestamp()
                WHERE key = $1 AND owner_token = $2 AND state = 'in_flight' AND phases IS NOT NULL
                RETURNING key, has_waiters
            )
            SELECT CASE WHEN has_waiters THEN pg_notify($3, key)::text END FROM (SELECT * FROM gone UNION ALL SELECT * FROM ended) AS released
            """;

        // $1 key, $2 owner, $3 phases.
        _recordPhasesSql = $"""
            UPDATE {table} SET phases = $3
            WHERE key = $1 AND owner_token = $2 AND state = 'in_flight' AND expires_at > clock_timestamp()
            """;

        // $1 key, $2 owner, $3 lease.
        _renewSql = $"""
            UPDATE {table} SET lease_expires_at = clock_timestamp() + $3
            WHERE key = $1 AND owner_token = $2 AND state = 'in_flight' AND expires_at > clock_timestamp()
            """;

        _getSql = $"SELECT 2, {Columns} FROM {table} WHERE key = $1 AND expires_at > clock_timestamp()";

        // $1 key, $2 observed owner: a row means nothing changed yet and the owner will NOTIFY when it does, because
        // has_waiters is set (by an earlier waiter, or by this statement's UPDATE on the row's latest version). A
        // completion that commits after this statement's snapshot saw has_waiters as set, so it notifies. When the
        // UPDATE finds the row already changed, no row comes back and the caller re-checks at once.
        _isUnchangedSql = $"""
            WITH cur AS (
                SELECT has_waiters FROM {table}
                WHERE key = $1 AND owner_token = $2 AND state = 'in_flight'
                  AND lease_expires_at > clock_timestamp() AND expires_at > clock_timestamp()
            ), mark AS (
                UPDATE {table} SET has_waiters = true
                WHERE key = $1 AND owner_token = $2 AND state = 'in_flight' AND EXISTS (SELECT 1 FROM cur WHERE NOT cur.has_waiters)
                RETURNING 1
            )
            SELECT 1 FROM cur WHERE cur.has_waiters OR EXISTS (SELECT 1 FROM mark)
            """;

        // $1 batch size. SKIP LOCKED: rows being claimed or completed right now are left for the next batch.
        _purgeSql = $"""
            DELETE FROM {table}
            WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM {table} WHERE purge_after <= clock_timestamp() AND expires_at <= clock_timestamp()
                LIMIT $1 FOR UPDATE SKIP LOCKED))
              AND expires_at <= clock_timestamp()
            """;

        _listener = Task.Run(ListenAsync);
    }

    /// <summary>The data source (connection pool) the store uses.</summary>
    public NpgsqlDataSource DataSource => _dataSource;

    /// <summary>The backend process id of the listener's connection, or 0 while it is not listening; for diagnostics and tests.</summary>
    internal int ListenerProcessId => _listenerProcessId;

    /// <summary>How many health checks the idle listener has run on its connection; for tests.</summary>
    internal long ListenerHealthChecks => Interlocked.Read(ref _listenerHealthChecks);

    /// <summary>How many claim statements ran again because their snapshot predated a concurrent claim; for tests.</summary>
    internal long StaleSnapshotRetries => Interlocked.Read(ref _staleSnapshotRetries);

    /// <inheritdoc />
    /// <remarks>
    /// Heard through this store's <c>LISTEN</c> connection, so from every node and the CLI once the deletion commits;
    /// <paramref name="missed"/> runs each time that connection is established again.
    /// </remarks>
    public IDisposable SubscribeToDeletions(Action<string> deleted, Action missed) => _deletionSubscribers.Add(deleted, missed);

    /// <summary>
    /// Creates or upgrades the schema, for <see cref="PostgreSqlIdempotencyStoreOptions.CreateSchemaAutomatically"/> and
    /// tests; users migrate with the one public entry point, <see cref="PostgreSqlIdempotencyMigrator"/>.
    /// </summary>
    /// <param name="cancellationToken">Cancels the migration.</param>
    /// <returns>How many migrations were applied.</returns>
    internal Task<int> MigrateAsync(CancellationToken cancellationToken) =>
        new PostgreSqlIdempotencyMigrator(_dataSource, _options).MigrateAsync(cancellationToken);

    /// <inheritdoc />
    public async ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request.Key);
        ArgumentNullException.ThrowIfNull(request.Fingerprint);
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = new NpgsqlCommand(_claimSql, connection);
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = request.Key });
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = request.Fingerprint });
            command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = request.OwnerToken });
            command.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = request.Lease });
            command.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = request.Retention });
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)request.Metadata?.PrincipalHash ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)request.Metadata?.Operation ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
            await PrepareAsync(command, cancellationToken).ConfigureAwait(false);

            // Almost always one pass. A second one only when the INSERT waited on a concurrent claim of the same key
            // that committed after this statement's snapshot, which the next snapshot sees.
            for (var attempt = 0; attempt < MaxClaimAttempts; attempt++)
            {
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false) || reader.GetInt32(0) == 0)
                    {
                        Interlocked.Increment(ref _staleSnapshotRetries);
                        continue;
                    }

                    var outcome = reader.GetInt32(0);

                    // A fresh claim (the usual new key) needs nothing from its row: reading the record only to drop
                    // it cost a dozen columns and their strings per new key.
                    if (outcome == 1 && !reader.GetBoolean(4))
                    {
                        return ClaimResult.NewClaim;
                    }

                    var record = await ReadRecordAsync(reader, request.Key, cancellationToken).ConfigureAwait(false);
                    if (outcome == 1)
                    {
                        return new ClaimResult(ClaimStatus.Claimed, record.Record, TookOver: true);
                    }

                    return new ClaimResult(
                        record.Record.State == IdempotencyRecordState.Completed ? ClaimStatus.Completed : ClaimStatus.InFlight,
                        record.Record);
                }
            }
        }

        throw new InvalidOperationException($"The claim of an idempotency key did not settle after {MaxClaimAttempts} attempts.");
    }

    /// <inheritdoc />
    public async ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var headers = new string[response.Headers.Count * 2];
        for (var i = 0; i < response.Headers.Count; i++)
        {
            headers[2 * i] = response.Headers[i].Key;
            headers[(2 * i) + 1] = response.Headers[i].Value;
        }

        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        bool completed;
        await using (connection.ConfigureAwait(false))
        {
            using var command = new NpgsqlCommand(_completeSql, connection);
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
            command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = ownerToken });
            command.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = retention });
            command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = response.StatusCode });
            command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = headers });
            command.Parameters.Add(new NpgsqlParameter<ReadOnlyMemory<byte>> { TypedValue = response.Body });
            command.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = response.BodyOmitted });
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _options.NotificationChannel });
            completed = await ReturnsRowAsync(command, cancellationToken).ConfigureAwait(false);
        }

        if (completed)
        {
            // Waiters in this process wake even while the listener is down.
            _signals.Signal(key);
        }

        return completed;
    }

    /// <inheritdoc />
    public async ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        bool released;
        await using (connection.ConfigureAwait(false))
        {
            using var command = new NpgsqlCommand(_releaseSql, connection);
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
            command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = ownerToken });
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _options.NotificationChannel });
            released = await ReturnsRowAsync(command, cancellationToken).ConfigureAwait(false);
        }

        if (released)
        {
            _signals.Signal(key);
        }

        return released;
    }

    /// <inheritdoc />
    public async ValueTask<bool> RecordPhasesAsync(string key, Guid ownerToken, ReadOnlyMemory<byte> phases, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = new NpgsqlCommand(_recordPhasesSql, connection);
            AddPhaseParameters(command, key, ownerToken, phases);
            return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
        }
    }

    /// <inheritdoc />
    /// <remarks>A connection from the store's data source; prefer passing the application's own (see <see cref="BeginTransactionAsync"/>).</remarks>
    public async ValueTask<System.Data.Common.DbConnection> OpenConnectionAsync(CancellationToken cancellationToken)
    {
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        return await JoinedDataSource().OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
    }

    // A transaction holds its connection from begin to commit, which a multiplexing data source does not lend; and a
    // joined transaction's connection is reset on close, as any application connection.
    private NpgsqlDataSource JoinedDataSource()
    {
        if (!_multiplexing)
        {
            return _dataSource;
        }

        if (Volatile.Read(ref _joinedDataSource) is { } existing)
        {
            return existing;
        }

        var created = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(_dataSource.ConnectionString) { Multiplexing = false, NoResetOnClose = false });
        if (Interlocked.CompareExchange(ref _joinedDataSource, created, null) is { } raced)
        {
            created.Dispose();
            return raced;
        }

        return created;
    }

    /// <inheritdoc />
    /// <remarks>
    /// The connection must reach the same server and database as the store (host, port and database of its connection
    /// string); the store's table is addressed by its schema-qualified name, so the connection's search path does not matter.
    /// </remarks>
    public async ValueTask<System.Data.Common.DbTransaction> BeginTransactionAsync(System.Data.Common.DbConnection connection, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        if (connection is not NpgsqlConnection npgsql)
        {
            throw new InvalidOperationException($"The PostgreSQL idempotency store joins only an Npgsql connection, not {connection.GetType().Name}.");
        }

        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var store = new NpgsqlConnectionStringBuilder(_dataSource.ConnectionString);
        var other = new NpgsqlConnectionStringBuilder(npgsql.ConnectionString);
        if (!string.Equals(store.Host, other.Host, StringComparison.OrdinalIgnoreCase) || store.Port != other.Port
            || !string.Equals(store.Database ?? store.Username, other.Database ?? other.Username, StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"A joined transaction must be on the idempotency store's own database ({store.Host}:{store.Port}/{store.Database}), but the connection reaches "
                + $"{other.Host}:{other.Port}/{other.Database}. Keep the business tables and the idempotency table in one database, or turn JoinedTransaction off.");
        }

        if (npgsql.State != System.Data.ConnectionState.Open)
        {
            await npgsql.OpenAsync(cancellationToken).ConfigureAwait(false);
        }

        return await npgsql.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    /// <remarks>The completion's <c>NOTIFY</c> is part of the transaction: waiters on other nodes hear it at the commit.</remarks>
    public async ValueTask<bool> CompleteAsync(System.Data.Common.DbTransaction transaction, string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);
        var (connection, npgsql) = Joined(transaction);
        using var command = new NpgsqlCommand(_completeSql, connection, npgsql);
        AddCompleteParameters(command, key, ownerToken, response, retention);
        return await ReturnsRowAsync(command, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    /// <remarks>
    /// One round trip: the fenced completion and <c>COMMIT</c> go as one batch. When the owner lost the key the completion
    /// fails on purpose, PostgreSQL aborts the transaction and skips the <c>COMMIT</c>, and this returns
    /// <see langword="false"/> with the transaction left for the caller's rollback.
    /// </remarks>
    public async ValueTask<bool> CompleteAndCommitAsync(System.Data.Common.DbTransaction transaction, string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(response);
        var (connection, npgsql) = Joined(transaction);
        var batch = new NpgsqlBatch(connection, npgsql);
        await using (batch.ConfigureAwait(false))
        {
            var complete = new NpgsqlBatchCommand(_completeForCommitSql);
            AddCompleteParameters(complete.Parameters, key, ownerToken, response, retention);
            batch.BatchCommands.Add(complete);
            batch.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
            try
            {
                await batch.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException lost) when (lost.SqlState == PostgresErrorCodes.InvalidTextRepresentation
                && lost.MessageText.Contains(LostClaimMarker, StringComparison.Ordinal))
            {
                return false;
            }
        }

        return true;
    }

    /// <inheritdoc />
    public async ValueTask<bool> RecordPhasesAsync(System.Data.Common.DbTransaction transaction, string key, Guid ownerToken, ReadOnlyMemory<byte> phases, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var (connection, npgsql) = Joined(transaction);
        using var command = new NpgsqlCommand(_recordPhasesSql, connection, npgsql);
        AddPhaseParameters(command, key, ownerToken, phases);
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <inheritdoc />
    public void OnCompletionCommitted(string key) => _signals.Signal(key);

    /// <inheritdoc />
    /// <remarks>
    /// Sees every data-modifying Npgsql command on this store's database (same host, port and database) that ran on
    /// another connection than the joined transaction's, or before it began, while the operation ran on the request's
    /// flow. The command had already run (an autocommitted write stays committed: fix the code that wrote it); the
    /// operation is refused, its joined writes rolled back and the key released. Not seen: writes through another
    /// driver, or from work that does not flow from the operation (a queued background job).
    /// </remarks>
    public void ThrowIfWrittenOutside(IdempotentExecution execution, Exception? failure)
    {
        ArgumentNullException.ThrowIfNull(execution);
        var seen = OutsideWriteWatch.Seen(execution);
        if (seen.Count == 0)
        {
            return;
        }

        var store = new NpgsqlConnectionStringBuilder(_dataSource.ConnectionString);
        var database = store.Database ?? store.Username;
        // The store's own statements on its own connections (a nested Idem operation's claim, say) are not the operation's writes.
        var write = seen.FirstOrDefault(w =>
            !w.Text.Contains(_options.TableName, StringComparison.Ordinal)
            && string.Equals(w.Database, database, StringComparison.Ordinal)
            && string.Equals(w.Host, store.Host, StringComparison.OrdinalIgnoreCase)
            && (w.Port is null || w.Port == store.Port));
        if (write is not null)
        {
            throw new InvalidOperationException(
                $"The operation wrote to the idempotency store's database through another connection than its joined transaction's (backend process {write.ProcessId}: {(write.Text.Length > 200 ? write.Text[..200] + "…" : write.Text)}). "
                + "That write was not part of the joined transaction: it committed on its own and stays if this operation is rolled back or retried. "
                + "Under a joined transaction write only through the transaction Idem hands out (IdempotentExecution.GetTransactionAsync, or a DbContext "
                + "joined with JoinIdempotentTransactionAsync / AddIdempotencyJoinedTransaction), or turn JoinedTransaction off for this operation.",
                failure);
        }
    }

    /// <inheritdoc />
    public bool IsCompleted(System.Data.Common.DbTransaction transaction)
    {
        if (transaction is not NpgsqlTransaction { Connection: not null } npgsql)
        {
            return true;
        }

        try
        {
            // Npgsql's completed flag is not public; a completed transaction refuses to tell its isolation level.
            _ = npgsql.IsolationLevel;
            return false;
        }
        catch (InvalidOperationException)
        {
            return true;
        }
    }

    private static (NpgsqlConnection Connection, NpgsqlTransaction Transaction) Joined(System.Data.Common.DbTransaction transaction)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        if (transaction is not NpgsqlTransaction { Connection: { } connection } npgsql)
        {
            throw new InvalidOperationException("The joined transaction is not an open Npgsql transaction (it was committed or rolled back, or comes from another provider).");
        }

        return (connection, npgsql);
    }

    private static void AddPhaseParameters(NpgsqlCommand command, string key, Guid ownerToken, ReadOnlyMemory<byte> phases)
    {
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
        command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = ownerToken });
        command.Parameters.Add(new NpgsqlParameter<ReadOnlyMemory<byte>> { TypedValue = phases });
    }

    private void AddCompleteParameters(NpgsqlCommand command, string key, Guid ownerToken, StoredResponse response, TimeSpan retention) =>
        AddCompleteParameters(command.Parameters, key, ownerToken, response, retention);

    private void AddCompleteParameters(NpgsqlParameterCollection parameters, string key, Guid ownerToken, StoredResponse response, TimeSpan retention)
    {
        var headers = new string[response.Headers.Count * 2];
        for (var i = 0; i < response.Headers.Count; i++)
        {
            headers[2 * i] = response.Headers[i].Key;
            headers[(2 * i) + 1] = response.Headers[i].Value;
        }

        parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
        parameters.Add(new NpgsqlParameter<Guid> { TypedValue = ownerToken });
        parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = retention });
        parameters.Add(new NpgsqlParameter<int> { TypedValue = response.StatusCode });
        parameters.Add(new NpgsqlParameter<string[]> { TypedValue = headers });
        parameters.Add(new NpgsqlParameter<ReadOnlyMemory<byte>> { TypedValue = response.Body });
        parameters.Add(new NpgsqlParameter<bool> { TypedValue = response.BodyOmitted });
        parameters.Add(new NpgsqlParameter<string> { TypedValue = _options.NotificationChannel });
    }

    /// <inheritdoc />
    public async ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = new NpgsqlCommand(_renewSql, connection);
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
            command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = ownerToken });
            command.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = lease });
            await PrepareAsync(command, cancellationToken).ConfigureAwait(false);
            return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
        }
    }

    /// <inheritdoc />
    public async ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = new NpgsqlCommand(_getSql, connection);
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
            await PrepareAsync(command, cancellationToken).ConfigureAwait(false);
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                return await reader.ReadAsync(cancellationToken).ConfigureAwait(false)
                    ? (await ReadRecordAsync(reader, key, cancellationToken).ConfigureAwait(false)).Record
                    : null;
            }
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Deletes in statements of at most <see cref="PostgreSqlIdempotencyStoreOptions.PurgeBatchSize"/> rows, each its own
    /// short transaction that skips rows locked by live requests.
    /// </remarks>
    public async ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxRecords);
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = new NpgsqlCommand(_purgeSql, connection);
            var batch = new NpgsqlParameter<int> { TypedValue = _options.PurgeBatchSize };
            command.Parameters.Add(batch);
            await PrepareAsync(command, cancellationToken).ConfigureAwait(false);
            var purged = 0;
            while (purged < maxRecords && !cancellationToken.IsCancellationRequested)
            {
                var size = Math.Min(maxRecords - purged, _options.PurgeBatchSize);
                batch.TypedValue = size;
                var deleted = await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                purged += deleted;
                if (deleted < size)
                {
                    break;
                }
            }

            return purged;
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Woken by <c>NOTIFY</c> from any node (or at once by a completion in this process). The wait registers first and
    /// then reads the row once, so a change between the caller's read and this call is never missed. While the
    /// listener is not (yet, or no longer known to be) listening, the wait reads the row, then waits for the listener
    /// within its timeout and reads again once it is back, so a change another node committed meanwhile (its
    /// <c>NOTIFY</c> unheard) is still seen; past the timeout the caller polls.
    /// </remarks>
    public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        var listening = Volatile.Read(ref _listening).Task;
        return listening.IsCompleted
            ? _signals.WaitAsync(key, ct => HasChangedAsync(key, observedOwner, ct), timeout, TimeProvider.System, cancellationToken)
            : WaitForListenerThenChangeAsync(listening, key, observedOwner, timeout, cancellationToken);
    }

    private async ValueTask WaitForListenerThenChangeAsync(Task listening, string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var started = TimeProvider.System.GetTimestamp();
        if (await HasChangedAsync(key, observedOwner, cancellationToken).ConfigureAwait(false))
        {
            return; // Changed already: no reason to wait for the listener (which may stay down for long).
        }

        try
        {
            await listening.WaitAsync(timeout, TimeProvider.System, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return; // The listener stayed down for the whole wait: the caller re-reads, as after any timeout.
        }

        var left = timeout - TimeProvider.System.GetElapsedTime(started);
        await _signals.WaitAsync(key, ct => HasChangedAsync(key, observedOwner, ct), left > TimeSpan.Zero ? left : TimeSpan.Zero, TimeProvider.System, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Marks the listener down: waits that start now hold off until it listens again.</summary>
    private void ListenerDown()
    {
        _listenerProcessId = 0;
        var current = Volatile.Read(ref _listening);
        if (current.Task.IsCompleted)
        {
            Interlocked.CompareExchange(ref _listening, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), current);
        }
    }

    /// <summary>Stops the listener and, when the store created it, disposes the data source.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _disposing.CancelAsync().ConfigureAwait(false);
        try
        {
            await _listener.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Expected on shutdown.
        }

        _disposing.Dispose();
        if (_joinedDataSource is not null)
        {
            await _joinedDataSource.DisposeAsync().ConfigureAwait(false);
        }

        if (_ownsDataSource)
        {
            await _dataSource.DisposeAsync().ConfigureAwait(false);
            await _listenerDataSource.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Stops the listener without waiting for it and, when the store created it, disposes the data source.
    /// Prefer <see cref="DisposeAsync"/>; this exists so a synchronously disposed service provider does not throw.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _disposing.Cancel();
        _joinedDataSource?.Dispose();
        if (_ownsDataSource)
        {
            _dataSource.Dispose();
            _listenerDataSource.Dispose();
        }
    }

    /// <summary>
    /// Builds the store's own data sources from a connection string: one for the statements and one, unpooled and never
    /// multiplexed, for the LISTEN connection. The statements' data source multiplexes unless the connection string says
    /// otherwise, never resets connections on close (the store changes no session state, and a reset costs the server one
    /// more statement per operation) and prepares the store's few statements automatically, which multiplexing needs
    /// because it does not support explicit preparation.
    /// </summary>
    private static (NpgsqlDataSource Statements, NpgsqlDataSource Listener) CreateDataSources(string connectionString)
    {
        // Multiplexing is the connection string's choice, off unless it says Multiplexing=true. It was the default for
        // its speed, until the fault harness showed a multiplexing data source that stopped answering for good after a
        // few minutes of PostgreSQL restarts, freezes and dropped connections (the same seed without it: no violation).
        var statements = new NpgsqlConnectionStringBuilder(connectionString) { NoResetOnClose = true };
        if (statements.MaxAutoPrepare < 16)
        {
            statements.MaxAutoPrepare = 16;
        }

        var listener = new NpgsqlConnectionStringBuilder(connectionString) { Multiplexing = false, Pooling = false };
        return (NpgsqlDataSource.Create(statements), NpgsqlDataSource.Create(listener));
    }

    /// <summary>
    /// Prepares the command explicitly unless the data source multiplexes (it is then prepared automatically). On a
    /// connection that already prepared the same SQL this is a lookup, not a round trip.
    /// </summary>
    private ValueTask PrepareAsync(NpgsqlCommand command, CancellationToken cancellationToken) =>
        _multiplexing ? ValueTask.CompletedTask : new ValueTask(command.PrepareAsync(cancellationToken));

    private async ValueTask<bool> ReturnsRowAsync(NpgsqlCommand command, CancellationToken cancellationToken)
    {
        await PrepareAsync(command, cancellationToken).ConfigureAwait(false);
        var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await using (reader.ConfigureAwait(false))
        {
            return await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    // Columns from ordinal 1: state, fingerprint, owner_token, took_over, lease_expires_at, expires_at, status_code, headers, body, body_omitted, phases, principal_hash, operation.
    private static async ValueTask<(IdempotencyRecord Record, bool TookOver)> ReadRecordAsync(NpgsqlDataReader reader, string key, CancellationToken cancellationToken)
    {
        var completed = reader.GetString(1) == "completed";
        StoredResponse? response = null;
        if (completed)
        {
            var headers = await reader.IsDBNullAsync(8, cancellationToken).ConfigureAwait(false) ? [] : reader.GetFieldValue<string[]>(8);
            var pairs = new KeyValuePair<string, string>[headers.Length / 2];
            for (var i = 0; i < pairs.Length; i++)
            {
                pairs[i] = new KeyValuePair<string, string>(headers[2 * i], headers[(2 * i) + 1]);
            }

            var body = await reader.IsDBNullAsync(9, cancellationToken).ConfigureAwait(false) ? [] : reader.GetFieldValue<byte[]>(9);
            response = new StoredResponse(reader.GetInt32(7), pairs, body) { BodyOmitted = reader.GetBoolean(10) };
        }

        var record = new IdempotencyRecord
        {
            Key = key,
            State = completed ? IdempotencyRecordState.Completed : IdempotencyRecordState.InFlight,
            Fingerprint = reader.GetString(2),
            OwnerToken = reader.GetGuid(3),
            LeaseExpiresAt = reader.GetFieldValue<DateTimeOffset>(5),
            ExpiresAt = reader.GetFieldValue<DateTimeOffset>(6),
            Response = response,
            Phases = await reader.IsDBNullAsync(11, cancellationToken).ConfigureAwait(false) ? default : reader.GetFieldValue<byte[]>(11),
            Metadata = await ReadMetadataAsync(reader, cancellationToken).ConfigureAwait(false),
        };
        return (record, reader.GetBoolean(4));
    }

    private static async ValueTask<IdempotencyRecordMetadata?> ReadMetadataAsync(NpgsqlDataReader reader, CancellationToken cancellationToken)
    {
        var principalHash = await reader.IsDBNullAsync(12, cancellationToken).ConfigureAwait(false) ? null : reader.GetString(12);
        var operation = await reader.IsDBNullAsync(13, cancellationToken).ConfigureAwait(false) ? null : reader.GetString(13);
        return principalHash is null && operation is null ? null : new IdempotencyRecordMetadata { PrincipalHash = principalHash, Operation = operation };
    }

    private async ValueTask<bool> HasChangedAsync(string key, Guid observedOwner, CancellationToken cancellationToken)
    {
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = new NpgsqlCommand(_isUnchangedSql, connection);
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
            command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = observedOwner });
            return !await ReturnsRowAsync(command, cancellationToken).ConfigureAwait(false);
        }
    }

    private ValueTask EnsureSchemaAsync(CancellationToken cancellationToken)
    {
        if (!_options.CreateSchemaAutomatically)
        {
            return ValueTask.CompletedTask;
        }

        var ready = Volatile.Read(ref _schemaReady);
        if (ready is { IsCompletedSuccessfully: true })
        {
            return ValueTask.CompletedTask;
        }

        return AwaitSchemaAsync(cancellationToken);
    }

    private async ValueTask AwaitSchemaAsync(CancellationToken cancellationToken)
    {
        var ready = Volatile.Read(ref _schemaReady);
        if (ready is null || ready.IsFaulted || ready.IsCanceled)
        {
            // One migration at a time per instance (only the caller that installs the attempt starts it); a failed
            // one is retried by the next operation.
            var start = new Task<Task<int>>(() => MigrateAsync(_disposing.Token));
            var attempt = start.Unwrap();
            if (Interlocked.CompareExchange(ref _schemaReady, attempt, ready) == ready)
            {
                start.Start(TaskScheduler.Default);
                ready = attempt;
            }
            else
            {
                ready = Volatile.Read(ref _schemaReady)!;
            }
        }

        await ready.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task ListenAsync()
    {
        var stopping = _disposing.Token;
        var delay = _options.ListenerReconnectMinDelay;
        var listen = "LISTEN " + PostgreSqlIdempotencyMigrator.Quote(_options.NotificationChannel);
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                var connection = await _listenerDataSource.OpenConnectionAsync(stopping).ConfigureAwait(false);
                await using (connection.ConfigureAwait(false))
                {
                    connection.Notification += (_, e) =>
                    {
                        if (!_deletionSubscribers.TryDeliver(e.Payload))
                        {
                            _signals.Signal(e.Payload);
                        }
                    };
                    using (var command = new NpgsqlCommand(listen, connection))
                    {
                        await command.ExecuteNonQueryAsync(stopping).ConfigureAwait(false);
                    }

                    // Deletions committed while no LISTEN was up went unheard: the subscribers forget what they kept
                    // (before the process id is published, which tests take as "listening").
                    _deletionSubscribers.Missed();
                    _listenerProcessId = connection.ProcessID;
                    Volatile.Read(ref _listening).TrySetResult();
                    delay = _options.ListenerReconnectMinDelay;
                    Log.Listening(_logger, _options.NotificationChannel);
                    while (true)
                    {
                        if (!await connection.WaitAsync(_options.ListenerHealthCheckInterval, stopping).ConfigureAwait(false))
                        {
                            // Quiet for a while: one round trip proves the connection is still there.
                            using var ping = new NpgsqlCommand("SELECT 1", connection);
                            await ping.ExecuteNonQueryAsync(stopping).ConfigureAwait(false);
                            Interlocked.Increment(ref _listenerHealthChecks);
                        }
                    }
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                break;
            }
#pragma warning disable CA1031 // The listener must survive any failure; it logs and reconnects.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.ListenerFailed(_logger, ex, _options.NotificationChannel, delay);
            }

            // The loop above leaves only by an exception: every way here is the listener going down.
            ListenerDown();
            try
            {
                await Task.Delay(delay, stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, _options.ListenerReconnectMaxDelay.Ticks));
        }

        _listenerProcessId = 0;
    }
}
