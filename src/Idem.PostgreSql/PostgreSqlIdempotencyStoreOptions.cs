using System.Text.RegularExpressions;
using Npgsql;

namespace Idem.PostgreSql;

/// <summary>Configures <see cref="PostgreSqlIdempotencyStore"/>.</summary>
public sealed partial class PostgreSqlIdempotencyStoreOptions
{
    /// <summary>
    /// The connection string, used when <see cref="DataSource"/> is not set; the store then builds and owns its own data
    /// sources: one for its statements (multiplexed only if the string sets <c>Multiplexing=true</c>, no reset on close,
    /// statements prepared automatically) and an unpooled one for its <c>LISTEN</c> connection.
    /// </summary>
    /// <value>Default: <see langword="null"/>.</value>
    public string? ConnectionString { get; set; }

    /// <summary>
    /// An existing data source (connection pool) to use; the store does not dispose it. Takes precedence over
    /// <see cref="ConnectionString"/>. It must not use multiplexing: the store's <c>LISTEN</c> connection comes from it.
    /// </summary>
    /// <value>Default: <see langword="null"/>.</value>
    public NpgsqlDataSource? DataSource { get; set; }

    /// <summary>The schema holding the table. A plain identifier: letters, digits and underscores, at most 48 characters.</summary>
    /// <value>Default: <c>public</c>.</value>
    public string SchemaName { get; set; } = "public";

    /// <summary>The table of records. A plain identifier: letters, digits and underscores, at most 40 characters.</summary>
    /// <value>Default: <c>idem_records</c>.</value>
    public string TableName { get; set; } = "idem_records";

    /// <summary>
    /// When <see langword="true"/>, the store applies its migrations (what <see cref="PostgreSqlIdempotencyMigrator"/> does)
    /// before its first operation. Leave it off where the application's database user may not run DDL, and migrate explicitly.
    /// </summary>
    /// <value>Default: <see langword="false"/>.</value>
    public bool CreateSchemaAutomatically { get; set; }

    /// <summary>
    /// The <c>LISTEN/NOTIFY</c> channel completions and releases are announced on (the payload is the store key).
    /// Every node sharing a table must use the same channel. A plain identifier, at most 63 characters.
    /// </summary>
    /// <value>Default: <c>idem_records_changed</c>.</value>
    public string NotificationChannel { get; set; } = "idem_records_changed";

    /// <summary>
    /// The most records one purge statement deletes. <see cref="PostgreSqlIdempotencyStore.PurgeExpiredAsync"/> deletes in
    /// statements of at most this many rows, each its own short transaction, so purging never holds many locks for long.
    /// </summary>
    /// <value>Default: 500. Range: 1 to 100,000.</value>
    public int PurgeBatchSize { get; set; } = 500;

    /// <summary>The first delay before the notification listener reconnects after its connection failed; it doubles per failure.</summary>
    /// <value>Default: 100 ms.</value>
    public TimeSpan ListenerReconnectMinDelay { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The cap on the listener's reconnect delay. While the listener is down, waiters fall back to polling.</summary>
    /// <value>Default: 5 s.</value>
    public TimeSpan ListenerReconnectMaxDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long the listener waits for a notification before it checks its idle connection with a round trip,
    /// so a silently dropped connection is noticed and replaced.
    /// </summary>
    /// <value>Default: 30 s.</value>
    public TimeSpan ListenerHealthCheckInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Throws when the options cannot work.</summary>
    /// <exception cref="InvalidOperationException">An option is missing or out of range.</exception>
    public void Validate()
    {
        if (DataSource is null && string.IsNullOrWhiteSpace(ConnectionString))
        {
            throw new InvalidOperationException("Set PostgreSqlIdempotencyStoreOptions.ConnectionString or DataSource.");
        }

        CheckIdentifier(nameof(SchemaName), SchemaName, 48);
        CheckIdentifier(nameof(TableName), TableName, 40);
        CheckIdentifier(nameof(NotificationChannel), NotificationChannel, 63);
        if (PurgeBatchSize is < 1 or > 100_000)
        {
            throw new InvalidOperationException($"{nameof(PurgeBatchSize)} must be between 1 and 100,000.");
        }

        if (ListenerReconnectMinDelay <= TimeSpan.Zero || ListenerReconnectMaxDelay < ListenerReconnectMinDelay)
        {
            throw new InvalidOperationException($"{nameof(ListenerReconnectMinDelay)} must be positive and at most {nameof(ListenerReconnectMaxDelay)}.");
        }

        if (ListenerHealthCheckInterval <= TimeSpan.Zero)
        {
            throw new InvalidOperationException($"{nameof(ListenerHealthCheckInterval)} must be positive.");
        }
    }

    internal PostgreSqlIdempotencyStoreOptions Clone() => (PostgreSqlIdempotencyStoreOptions)MemberwiseClone();

    private static void CheckIdentifier(string name, string? value, int maxLength)
    {
        if (value is null || value.Length > maxLength || !Identifier().IsMatch(value))
        {
            throw new InvalidOperationException(
                $"{name} must be a plain identifier (a letter or underscore, then letters, digits or underscores) of at most {maxLength} characters.");
        }
    }

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$", RegexOptions.CultureInvariant)]
    private static partial Regex Identifier();
}
