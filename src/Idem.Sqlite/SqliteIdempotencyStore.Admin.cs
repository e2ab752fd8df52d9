using System.Globalization;
using System.Runtime.CompilerServices;
using Microsoft.Data.Sqlite;

namespace Idem.Sqlite;

/// <summary>Administration (<c>idem keys</c>, <c>idem doctor</c>, <c>idem migrate</c>): the same table, the same schema code.</summary>
public sealed partial class SqliteIdempotencyStore : IIdempotencyStoreAdmin
{
    /// <inheritdoc />
    public async IAsyncEnumerable<IdempotencyRecord> ListAsync(IdempotencyRecordQuery query, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        query.Validate();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        var t = Quote(_table);
        var sql = new System.Text.StringBuilder(
            $"SELECT {SqliteStatements.Columns} FROM {t} WHERE 1 = 1");
        var connection = _sql.Open(_connectionString);
        await using (connection.ConfigureAwait(false))
        {
            using var command = connection.CreateCommand();
            var now = _timeProvider.GetUtcNow().ToUnixTimeMilliseconds();
            command.Parameters.AddWithValue("$now", now);
            if (query.State is { } state)
            {
                sql.Append(" AND state = $state");
                command.Parameters.AddWithValue("$state", (int)state);
            }

            if (query.Expired is { } expired)
            {
                sql.Append(expired ? " AND expires_at <= $now" : " AND expires_at > $now");
            }

            if (query.ExpiresBefore is { } before)
            {
                sql.Append(" AND expires_at < $before");
                command.Parameters.AddWithValue("$before", before.ToUnixTimeMilliseconds());
            }

            if (query.ExpiresAfter is { } after)
            {
                sql.Append(" AND expires_at > $after");
                command.Parameters.AddWithValue("$after", after.ToUnixTimeMilliseconds());
            }

            if (query.PrincipalHash is { } principalHash)
            {
                sql.Append(" AND principal_hash = $principal_hash");
                command.Parameters.AddWithValue("$principal_hash", principalHash);
            }

            if (query.Route is { } route)
            {
                // The operation itself, or "METHOD route": substr, not LIKE, so % or _ in a route match literally.
                sql.Append(" AND (operation = $route OR substr(operation, -length($route) - 1) = ' ' || $route)");
                command.Parameters.AddWithValue("$route", route);
            }

            if (!string.IsNullOrEmpty(query.KeyPrefix))
            {
                // substr, not LIKE: a prefix with % or _ must match literally.
                sql.Append(" AND substr(key, 1, length($prefix)) = $prefix");
                command.Parameters.AddWithValue("$prefix", query.KeyPrefix);
            }

            sql.Append(" ORDER BY key LIMIT $limit;");
            command.Parameters.AddWithValue("$limit", query.Limit);
            command.CommandText = sql.ToString();
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    yield return SqliteStatements.ReadCurrent(reader);
                }
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        var deleted = await WriteAsync(new SqliteDeleteOperation(Quote(_table), key), cancellationToken).ConfigureAwait(false);
        if (deleted)
        {
            // Waiters re-check and claim the key themselves.
            _signals.Signals.Signal(key);
        }

        return deleted;
    }

    /// <inheritdoc />
    /// <remarks>Reads <c>PRAGMA user_version</c> and <c>journal_mode</c> without creating the schema. SQLite has no clock of its own: the store judges leases by this machine's.</remarks>
    public async ValueTask<IdempotencyStoreDescription> DescribeAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var connection = _sql.Open(_connectionString);
        await using (connection.ConfigureAwait(false))
        {
            var tableExists = Convert.ToInt64(await ScalarAsync(connection, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $name;", cancellationToken, ("$name", _table)).ConfigureAwait(false), CultureInfo.InvariantCulture) > 0;
            var version = tableExists
                ? Convert.ToInt32(await ScalarAsync(connection, "PRAGMA user_version;", cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture)
                : 0;
            var journal = Convert.ToString(await ScalarAsync(connection, "PRAGMA journal_mode;", cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture) ?? "";
            return new IdempotencyStoreDescription
            {
                Kind = "sqlite",
                StoreTime = _timeProvider.GetUtcNow(),
                SchemaVersion = version,
                LatestSchemaVersion = SchemaVersion,
                Settings = new Dictionary<string, string>
                {
                    ["journal_mode"] = journal,
                    ["table"] = _table,
                    ["sqlite_version"] = connection.ServerVersion,
                },
            };
        }
    }

    /// <inheritdoc />
    /// <remarks>Runs the store's own schema creation (the one every first operation runs): WAL mode, the table, its index, <c>user_version</c>.</remarks>
    public async ValueTask<IdempotencySchemaMigration> MigrateAsync(CancellationToken cancellationToken)
    {
        var before = (await DescribeAsync(cancellationToken).ConfigureAwait(false)).SchemaVersion ?? 0;
        await EnsureReadyAsync(cancellationToken).ConfigureAwait(false);
        var applied = new List<string>();
        for (var version = before + 1; version <= SchemaVersion; version++)
        {
            applied.Add(version switch
            {
                1 => string.Create(CultureInfo.InvariantCulture, $"1: table \"{_table}\" with its expiry index, WAL journal mode"),
                2 => string.Create(CultureInfo.InvariantCulture, $"2: column phases (recovery points) on \"{_table}\""),
                _ => string.Create(CultureInfo.InvariantCulture, $"{version}: columns principal_hash and operation (record metadata) on \"{_table}\""),
            });
        }

        return new IdempotencySchemaMigration(before, Math.Max(before, SchemaVersion), applied);
    }

    private static async Task<object?> ScalarAsync(SqliteConnection connection, string sql, CancellationToken cancellationToken, params (string Name, object Value)[] parameters)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value);
        }

        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
    }

    private sealed class SqliteDeleteOperation(string quotedTable, string key) : SqliteWriteOperation<bool>
    {
        protected override bool Run(SqliteWriteSession session, TimeProvider timeProvider)
        {
            using var command = session.Connection.CreateCommand();
            command.CommandText = $"DELETE FROM {quotedTable} WHERE key = $key;";
            command.Parameters.AddWithValue("$key", key);
            return command.ExecuteNonQuery() != 0;
        }
    }
}
