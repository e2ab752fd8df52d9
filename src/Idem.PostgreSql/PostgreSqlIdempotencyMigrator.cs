using System.Globalization;
using System.Reflection;
using Npgsql;

namespace Idem.PostgreSql;

/// <summary>
/// Creates and upgrades the store's schema from the SQL files in <c>Schema/</c> (embedded; also shipped for review).
/// Safe to run on many nodes at once: it holds a transaction-scoped advisory lock per table, applies only the versions
/// not yet recorded in <c>&lt;table&gt;_schema_version</c>, and commits them together.
/// </summary>
public sealed class PostgreSqlIdempotencyMigrator
{
    private static readonly string[] Scripts = ["001_create.sql", "002_phases.sql", "003_metadata.sql"];

    private readonly NpgsqlDataSource _dataSource;
    private readonly string _schema;
    private readonly string _table;

    /// <summary>Creates a migrator for the table named by <paramref name="options"/> (its data source or connection string is not used).</summary>
    /// <param name="dataSource">Where to migrate; needs the right to create tables (and the schema, if it does not exist).</param>
    /// <param name="options">The schema and table names; the defaults when <see langword="null"/>.</param>
    public PostgreSqlIdempotencyMigrator(NpgsqlDataSource dataSource, PostgreSqlIdempotencyStoreOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var names = options?.Clone() ?? new PostgreSqlIdempotencyStoreOptions();
        names.DataSource ??= dataSource;
        names.Validate();
        _dataSource = dataSource;
        _schema = names.SchemaName;
        _table = names.TableName;
    }

    /// <summary>The schema version this package expects.</summary>
    public static int LatestVersion => Scripts.Length;

    /// <summary>
    /// Returns the SQL of migration <paramref name="version"/> as shipped, with its psql variables
    /// (<c>:"schema"</c>, <c>:"table"</c>, <c>:"purge_index"</c>) not yet substituted; for review and hand application.
    /// </summary>
    /// <param name="version">1 to <see cref="LatestVersion"/>.</param>
    public static string GetScript(int version)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(version, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(version, LatestVersion);
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("Idem.PostgreSql.Schema." + Scripts[version - 1])
            ?? throw new InvalidOperationException($"Missing embedded schema script {Scripts[version - 1]}.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Returns the migration SQL for this migrator's schema and table, variables substituted.</summary>
    /// <param name="version">1 to <see cref="LatestVersion"/>.</param>
    public string GetResolvedScript(int version) =>
        GetScript(version)
            .Replace(":\"schema\"", Quote(_schema), StringComparison.Ordinal)
            .Replace(":\"table\"", Quote(_table), StringComparison.Ordinal)
            .Replace(":\"purge_index\"", Quote(_table + "_purge_after_idx"), StringComparison.Ordinal);

    /// <summary>Applies every migration not applied yet, in one transaction. Idempotent and safe to run concurrently.</summary>
    /// <param name="cancellationToken">Cancels the migration (it then rolls back).</param>
    /// <returns>How many migrations this call applied (0 when the schema was already current).</returns>
    public async Task<int> MigrateAsync(CancellationToken cancellationToken)
    {
        var versionTable = Quote(_schema) + "." + Quote(_table + "_schema_version");
        var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                // Serializes migrators of this table across all nodes; released at commit or rollback.
                await ExecuteAsync(
                    connection,
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    cancellationToken,
                    "idem.migrate:" + _schema + "." + _table).ConfigureAwait(false);
                await ExecuteAsync(connection, $"CREATE SCHEMA IF NOT EXISTS {Quote(_schema)}", cancellationToken).ConfigureAwait(false);
                await ExecuteAsync(
                    connection,
                    $"CREATE TABLE IF NOT EXISTS {versionTable} (version integer NOT NULL PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                    cancellationToken).ConfigureAwait(false);

                int current;
                using (var command = new NpgsqlCommand($"SELECT coalesce(max(version), 0) FROM {versionTable}", connection))
                {
                    current = Convert.ToInt32(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false), CultureInfo.InvariantCulture);
                }

                var applied = 0;
                for (var version = current + 1; version <= LatestVersion; version++)
                {
                    await ExecuteAsync(connection, GetResolvedScript(version), cancellationToken).ConfigureAwait(false);
                    await ExecuteAsync(connection, $"INSERT INTO {versionTable} (version) VALUES ($1)", cancellationToken, version).ConfigureAwait(false);
                    applied++;
                }

                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                return applied;
            }
        }
    }

    internal static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken, params object[] parameters)
    {
        using var command = new NpgsqlCommand(sql, connection);
        foreach (var parameter in parameters)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = parameter });
        }

        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }
}
