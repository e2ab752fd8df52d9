using System.Globalization;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Idem.Sqlite;

/// <summary>The SQL of one store instance (its table name is baked in), shared by its sessions.</summary>
internal sealed class SqliteStatements
{
    public const int InFlight = (int)IdempotencyRecordState.InFlight;
    public const int Completed = (int)IdempotencyRecordState.Completed;
    public const string Columns = "key, state, fingerprint, owner, lease_expires_at, expires_at, status_code, headers, body, body_omitted, phases, principal_hash, operation";

    public SqliteStatements(string table, TimeSpan busyTimeout)
    {
        var t = "\"" + table + "\"";
        Pragmas = string.Create(
            CultureInfo.InvariantCulture,
            $"PRAGMA busy_timeout = {(long)Math.Ceiling(busyTimeout.TotalMilliseconds)}; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 4000;");
        Claim = $"""
            INSERT INTO {t} (key, state, fingerprint, owner, lease_expires_at, expires_at, body_omitted, took_over, principal_hash, operation)
            VALUES ($key, {InFlight}, $fingerprint, $owner, $lease, $expires, 0, 0, $principal_hash, $operation)
            ON CONFLICT (key) DO UPDATE SET
                state = {InFlight}, fingerprint = excluded.fingerprint, owner = excluded.owner,
                principal_hash = excluded.principal_hash, operation = excluded.operation,
                lease_expires_at = excluded.lease_expires_at, expires_at = excluded.expires_at,
                status_code = NULL, headers = NULL, body = NULL, body_omitted = 0,
                phases = CASE WHEN {t}.expires_at <= $now THEN NULL ELSE {t}.phases END,
                took_over = {t}.expires_at > $now
            WHERE {t}.expires_at <= $now
               OR ({t}.state = {InFlight} AND {t}.lease_expires_at <= $now AND {t}.fingerprint = excluded.fingerprint)
            RETURNING took_over;
            """;
        Select = $"SELECT {Columns} FROM {t} WHERE key = $key;";
        Get = $"SELECT {Columns} FROM {t} WHERE key = $key AND expires_at > $now;";
        State = $"SELECT state, owner, lease_expires_at, expires_at FROM {t} WHERE key = $key;";
        Complete = $"""
            UPDATE {t} SET state = {Completed}, expires_at = $expires, status_code = $status, headers = $headers, body = $body, body_omitted = $omitted, phases = NULL
            WHERE key = $key AND owner = $owner AND state = {InFlight} AND expires_at > $now;
            """;
        Renew = $"UPDATE {t} SET lease_expires_at = $lease WHERE key = $key AND owner = $owner AND state = {InFlight} AND expires_at > $now;";
        // A record with recovery points is never deleted by its owner: its lease ends, and the retry takes it over and
        // resumes after the last finished phase.
        Release = $"""
            DELETE FROM {t} WHERE key = $key AND owner = $owner AND state = {InFlight} AND phases IS NULL;
            UPDATE {t} SET lease_expires_at = $now WHERE key = $key AND owner = $owner AND state = {InFlight} AND phases IS NOT NULL;
            """;
        RecordPhases = $"UPDATE {t} SET phases = $phases WHERE key = $key AND owner = $owner AND state = {InFlight} AND expires_at > $now;";
        Purge = $"DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE expires_at <= $now LIMIT $max);";
    }

    public string Pragmas { get; }

    public string Claim { get; }

    public string Select { get; }

    public string Get { get; }

    public string State { get; }

    public string Complete { get; }

    public string Renew { get; }

    public string Release { get; }

    public string RecordPhases { get; }

    public string Purge { get; }

    /// <summary>Opens a long-lived connection and applies the per-connection PRAGMAs once.</summary>
    public SqliteConnection Open(string connectionString)
    {
        var connection = new SqliteConnection(connectionString);
        try
        {
            connection.Open();
            using var pragmas = connection.CreateCommand();
            pragmas.CommandText = Pragmas;
            pragmas.ExecuteNonQuery();
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    public static SqliteCommand Prepare(SqliteConnection connection, string sql, out SqliteParameter key)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        key = command.Parameters.Add("$key", SqliteType.Text);
        return command;
    }

    public static SqliteParameter Add(SqliteCommand command, string name, SqliteType type) => command.Parameters.Add(name, type);

    public static IdempotencyRecord? ReadRecord(SqliteCommand command)
    {
        using var reader = command.ExecuteReader();
        return reader.Read() ? ReadCurrent(reader) : null;
    }

    /// <summary>The record at the reader's current row (the columns of <c>Select</c>, in order).</summary>
    public static IdempotencyRecord ReadCurrent(SqliteDataReader reader)
    {
        var state = (IdempotencyRecordState)reader.GetInt32(1);
        StoredResponse? response = null;
        if (state == IdempotencyRecordState.Completed)
        {
            var headers = reader.IsDBNull(7) ? [] : StoredResponseHeaders.Decode(reader.GetFieldValue<byte[]>(7));
            var body = reader.IsDBNull(8) ? [] : reader.GetFieldValue<byte[]>(8);
            response = new StoredResponse(reader.GetInt32(6), headers, body) { BodyOmitted = reader.GetInt64(9) != 0 };
        }

        return new IdempotencyRecord
        {
            Key = reader.GetString(0),
            State = state,
            Fingerprint = reader.GetString(2),
            OwnerToken = reader.GetGuid(3),
            LeaseExpiresAt = DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(4)),
            ExpiresAt = DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(5)),
            Response = response,
            Phases = reader.IsDBNull(10) ? default : reader.GetFieldValue<byte[]>(10),
            Metadata = reader.IsDBNull(11) && reader.IsDBNull(12)
                ? null
                : new IdempotencyRecordMetadata
                {
                    PrincipalHash = reader.IsDBNull(11) ? null : reader.GetString(11),
                    Operation = reader.IsDBNull(12) ? null : reader.GetString(12),
                },
        };
    }

    // 16 bytes (Guid.ToByteArray order); Microsoft.Data.Sqlite would otherwise bind a Guid as 36 characters of text.
    public static byte[] Owner(Guid owner) => owner.ToByteArray();
}

/// <summary>
/// A long-lived read connection with its statements prepared once. Rented from the store's pool by one caller at a
/// time; WAL lets any number of them read while a writer writes.
/// </summary>
internal sealed class SqliteReadSession : IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly SqliteCommand _select, _get, _state;
    private readonly SqliteParameter _selectKey, _getKey, _getNow, _stateKey;

    public SqliteReadSession(SqliteStatements sql, string connectionString)
    {
        _connection = sql.Open(connectionString);
        _select = SqliteStatements.Prepare(_connection, sql.Select, out _selectKey);
        _get = SqliteStatements.Prepare(_connection, sql.Get, out _getKey);
        _getNow = SqliteStatements.Add(_get, "$now", SqliteType.Integer);
        _state = SqliteStatements.Prepare(_connection, sql.State, out _stateKey);
    }

    /// <summary>The row of <paramref name="key"/>, expired or not.</summary>
    public IdempotencyRecord? Select(string key)
    {
        _selectKey.Value = key;
        return SqliteStatements.ReadRecord(_select);
    }

    /// <summary>The live row of <paramref name="key"/>.</summary>
    public IdempotencyRecord? Get(string key, long nowMs)
    {
        _getKey.Value = key;
        _getNow.Value = nowMs;
        return SqliteStatements.ReadRecord(_get);
    }

    /// <summary>Whether the row no longer shows <paramref name="observedOwner"/>'s live, unexpired lease.</summary>
    public bool HasChanged(string key, Guid observedOwner, TimeProvider timeProvider)
    {
        _stateKey.Value = key;
        using var reader = _state.ExecuteReader();
        if (!reader.Read())
        {
            return true;
        }

        var now = timeProvider.GetUtcNow().ToUnixTimeMilliseconds();
        return reader.GetInt32(0) != SqliteStatements.InFlight
            || reader.GetGuid(1) != observedOwner
            || reader.GetInt64(2) <= now
            || reader.GetInt64(3) <= now;
    }

    public void Dispose()
    {
        _select.Dispose();
        _get.Dispose();
        _state.Dispose();
        _connection.Dispose();
    }
}

/// <summary>
/// The one write connection of a store instance, used only by its writer loop, with its statements (transaction
/// control included) prepared once.
/// </summary>
internal sealed class SqliteWriteSession : IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly SqliteCommand _begin, _commit, _rollback;

    public SqliteWriteSession(SqliteStatements sql, string connectionString)
    {
        // SQLite's default 2 MB page cache: a 32 MB one cost 7-10 % more CPU per new key in paired runs, most of it in
        // SQLite's page-cache truncation (pcache1TruncateUnsafe, which walks the cache's hash table).
        _connection = sql.Open(connectionString);

        _begin = Plain("BEGIN IMMEDIATE;");
        _commit = Plain("COMMIT;");
        _rollback = Plain("ROLLBACK;");

        Claim = SqliteStatements.Prepare(_connection, sql.Claim, out ClaimKey);
        ClaimFingerprint = SqliteStatements.Add(Claim, "$fingerprint", SqliteType.Text);
        ClaimOwner = SqliteStatements.Add(Claim, "$owner", SqliteType.Blob);
        ClaimLease = SqliteStatements.Add(Claim, "$lease", SqliteType.Integer);
        ClaimExpires = SqliteStatements.Add(Claim, "$expires", SqliteType.Integer);
        ClaimNow = SqliteStatements.Add(Claim, "$now", SqliteType.Integer);
        ClaimPrincipalHash = SqliteStatements.Add(Claim, "$principal_hash", SqliteType.Text);
        ClaimOperation = SqliteStatements.Add(Claim, "$operation", SqliteType.Text);

        Select = SqliteStatements.Prepare(_connection, sql.Select, out SelectKey);

        Complete = SqliteStatements.Prepare(_connection, sql.Complete, out CompleteKey);
        CompleteOwner = SqliteStatements.Add(Complete, "$owner", SqliteType.Blob);
        CompleteNow = SqliteStatements.Add(Complete, "$now", SqliteType.Integer);
        CompleteExpires = SqliteStatements.Add(Complete, "$expires", SqliteType.Integer);
        CompleteStatus = SqliteStatements.Add(Complete, "$status", SqliteType.Integer);
        CompleteHeaders = SqliteStatements.Add(Complete, "$headers", SqliteType.Blob);
        CompleteBody = SqliteStatements.Add(Complete, "$body", SqliteType.Blob);
        CompleteOmitted = SqliteStatements.Add(Complete, "$omitted", SqliteType.Integer);

        Renew = SqliteStatements.Prepare(_connection, sql.Renew, out RenewKey);
        RenewOwner = SqliteStatements.Add(Renew, "$owner", SqliteType.Blob);
        RenewNow = SqliteStatements.Add(Renew, "$now", SqliteType.Integer);
        RenewLease = SqliteStatements.Add(Renew, "$lease", SqliteType.Integer);

        Release = SqliteStatements.Prepare(_connection, sql.Release, out ReleaseKey);
        ReleaseOwner = SqliteStatements.Add(Release, "$owner", SqliteType.Blob);
        ReleaseNow = SqliteStatements.Add(Release, "$now", SqliteType.Integer);

        RecordPhases = SqliteStatements.Prepare(_connection, sql.RecordPhases, out RecordPhasesKey);
        RecordPhasesOwner = SqliteStatements.Add(RecordPhases, "$owner", SqliteType.Blob);
        RecordPhasesNow = SqliteStatements.Add(RecordPhases, "$now", SqliteType.Integer);
        RecordPhasesValue = SqliteStatements.Add(RecordPhases, "$phases", SqliteType.Blob);

        Purge = _connection.CreateCommand();
        Purge.CommandText = sql.Purge;
        PurgeNow = SqliteStatements.Add(Purge, "$now", SqliteType.Integer);
        PurgeMax = SqliteStatements.Add(Purge, "$max", SqliteType.Integer);
    }

#pragma warning disable CA1051, SA1401 // Plain fields: the write operations bind these directly, on the writer loop only.
    public readonly SqliteCommand Claim, Select, Complete, Renew, Release, RecordPhases, Purge;
    public readonly SqliteParameter ReleaseNow, RecordPhasesKey, RecordPhasesOwner, RecordPhasesNow, RecordPhasesValue;
    public readonly SqliteParameter ClaimKey, ClaimFingerprint, ClaimOwner, ClaimLease, ClaimExpires, ClaimNow, ClaimPrincipalHash, ClaimOperation, SelectKey;
    public readonly SqliteParameter CompleteKey, CompleteOwner, CompleteNow, CompleteExpires, CompleteStatus, CompleteHeaders, CompleteBody, CompleteOmitted;
    public readonly SqliteParameter RenewKey, RenewOwner, RenewNow, RenewLease, ReleaseKey, ReleaseOwner, PurgeNow, PurgeMax;
#pragma warning restore CA1051, SA1401

    /// <summary>The write connection, for the administrative writes that have no prepared statement (<see cref="SqliteIdempotencyStore.DeleteAsync"/>).</summary>
    public SqliteConnection Connection => _connection;

    /// <summary>Takes the write lock (waiting up to busy_timeout, then failing with SQLITE_BUSY).</summary>
    public void Begin() => _begin.ExecuteNonQuery();

    public void Commit() => _commit.ExecuteNonQuery();

    /// <summary>Rolls back if a transaction is still open (SQLite may already have rolled it back itself).</summary>
    public void RollbackIfOpen()
    {
        if (raw.sqlite3_get_autocommit(_connection.Handle) == 0)
        {
            _rollback.ExecuteNonQuery();
        }
    }

    public void Dispose()
    {
        foreach (var command in new[] { _begin, _commit, _rollback, Claim, Select, Complete, Renew, Release, RecordPhases, Purge })
        {
            command.Dispose();
        }

        _connection.Dispose();
    }

    private SqliteCommand Plain(string sql)
    {
        var command = _connection.CreateCommand();
        command.CommandText = sql;
        return command;
    }
}
