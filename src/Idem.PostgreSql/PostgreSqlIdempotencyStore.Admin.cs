using System.Globalization;
using System.Runtime.CompilerServices;
using Npgsql;

namespace Idem.PostgreSql;

/// <summary>Administration (<c>idem keys</c>, <c>idem doctor</c>, <c>idem migrate</c>): the same table, the same migrator.</summary>
public sealed partial class PostgreSqlIdempotencyStore : IIdempotencyStoreAdmin
{
    private string QuotedTable => PostgreSqlIdempotencyMigrator.Quote(_options.SchemaName) + "." + PostgreSqlIdempotencyMigrator.Quote(_options.TableName);

    /// <inheritdoc />
    /// <remarks>Expiry is judged by the server's clock (<c>clock_timestamp()</c>).</remarks>
    public async IAsyncEnumerable<IdempotencyRecord> ListAsync(IdempotencyRecordQuery query, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        query.Validate();
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            // Every filter is a parameter; a NULL parameter turns its filter off.
            using var command = new NpgsqlCommand(
                $"""
                SELECT key, {Columns} FROM {QuotedTable}
                WHERE ($1::text IS NULL OR state = $1)
                  AND ($2::boolean IS NULL OR (expires_at <= clock_timestamp()) = $2)
                  AND ($3::timestamptz IS NULL OR expires_at < $3)
                  AND ($4::text IS NULL OR left(key, length($4)) = $4)
                  AND ($6::timestamptz IS NULL OR expires_at > $6)
                  AND ($7::text IS NULL OR principal_hash = $7)
                  AND ($8::text IS NULL OR operation = $8 OR right(operation, length($8) + 1) = ' ' || $8)
                ORDER BY key LIMIT $5
                """,
                connection);
            command.Parameters.Add(new NpgsqlParameter { Value = query.State switch
            {
                IdempotencyRecordState.InFlight => "in_flight",
                IdempotencyRecordState.Completed => "completed",
                _ => DBNull.Value,
            } });
            command.Parameters.Add(new NpgsqlParameter { Value = query.Expired is { } expired ? expired : DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Boolean });
            command.Parameters.Add(new NpgsqlParameter { Value = query.ExpiresBefore is { } before ? before : DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.TimestampTz });
            command.Parameters.Add(new NpgsqlParameter { Value = string.IsNullOrEmpty(query.KeyPrefix) ? DBNull.Value : query.KeyPrefix, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
            command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = query.Limit });
            command.Parameters.Add(new NpgsqlParameter { Value = query.ExpiresAfter is { } after ? after : DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.TimestampTz });
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)query.PrincipalHash ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)query.Route ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    yield return (await ReadRecordAsync(reader, reader.GetString(0), cancellationToken).ConfigureAwait(false)).Record;
                }
            }
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// One statement; waiters on any node are notified as for a release, and every node's deletion subscribers
    /// (<see cref="SubscribeToDeletions"/>) hear of it through the same channel when the deletion commits.
    /// </remarks>
    public async ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        await EnsureSchemaAsync(cancellationToken).ConfigureAwait(false);
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            using var command = new NpgsqlCommand(
                $"""
                WITH gone AS (DELETE FROM {QuotedTable} WHERE key = $1 RETURNING key, has_waiters)
                SELECT CASE WHEN has_waiters THEN pg_notify($2, key)::text END, pg_notify($2, $3 || key)::text FROM gone
                """,
                connection);
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _options.NotificationChannel });
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = DeletionSubscribers.MessagePrefix });
            var deleted = await ReturnsRowAsync(command, cancellationToken).ConfigureAwait(false);
            if (deleted)
            {
                _signals.Signal(key);
                _deletionSubscribers.Deleted(key); // This process at once, even while its listener is down.
            }

            return deleted;
        }
    }

    /// <inheritdoc />
    /// <remarks>Reads the server's clock and the recorded schema version; creates nothing.</remarks>
    public async ValueTask<IdempotencyStoreDescription> DescribeAsync(CancellationToken cancellationToken)
    {
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var versionTable = PostgreSqlIdempotencyMigrator.Quote(_options.SchemaName) + "." + PostgreSqlIdempotencyMigrator.Quote(_options.TableName + "_schema_version");
            DateTimeOffset now;
            string serverVersion;
            bool hasVersionTable;
            using (var command = new NpgsqlCommand("SELECT clock_timestamp(), current_setting('server_version'), to_regclass($1) IS NOT NULL", connection))
            {
                command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = versionTable });
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                    now = reader.GetFieldValue<DateTimeOffset>(0);
                    serverVersion = reader.GetString(1);
                    hasVersionTable = reader.GetBoolean(2);
                }
            }

            var version = 0;
            if (hasVersionTable)
            {
                using var command = new NpgsqlCommand($"SELECT coalesce(max(version), 0) FROM {versionTable}", connection);
                version = Convert.ToInt32(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture);
            }

            return new IdempotencyStoreDescription
            {
                Kind = "postgresql",
                StoreTime = now,
                SchemaVersion = version,
                LatestSchemaVersion = PostgreSqlIdempotencyMigrator.LatestVersion,
                Settings = new Dictionary<string, string>
                {
                    ["server_version"] = serverVersion,
                    ["table"] = _options.SchemaName + "." + _options.TableName,
                },
            };
        }
    }

    /// <inheritdoc />
    /// <remarks>Runs <see cref="PostgreSqlIdempotencyMigrator"/> (advisory-locked, one transaction).</remarks>
    async ValueTask<IdempotencySchemaMigration> IIdempotencyStoreAdmin.MigrateAsync(CancellationToken cancellationToken)
    {
        var before = (await DescribeAsync(cancellationToken).ConfigureAwait(false)).SchemaVersion ?? 0;
        var count = await new PostgreSqlIdempotencyMigrator(_dataSource, _options).MigrateAsync(cancellationToken).ConfigureAwait(false);

        // Another node may have migrated in between: the migrator applied `count` versions ending at the latest.
        var after = PostgreSqlIdempotencyMigrator.LatestVersion;
        var applied = new List<string>();
        for (var version = after - count + 1; version <= after; version++)
        {
            applied.Add(string.Create(CultureInfo.InvariantCulture, $"{version}: Schema/{version:000}_*.sql on {_options.SchemaName}.{_options.TableName}"));
        }

        return new IdempotencySchemaMigration(before, after, applied);
    }
}
