namespace Idem.Sqlite;

/// <summary>Configures <see cref="SqliteIdempotencyStore"/>.</summary>
public sealed class SqliteIdempotencyStoreOptions
{
    /// <summary>
    /// The path of the database file, created when missing. Set this or <see cref="ConnectionString"/>; when both are
    /// set, this path replaces the connection string's <c>Data Source</c>.
    /// </summary>
    /// <value>No default.</value>
    public string? Path { get; set; }

    /// <summary>
    /// A Microsoft.Data.Sqlite connection string, for settings beyond the path (for example <c>Password</c> with an
    /// encrypting build of SQLite). It must name a file: in-memory databases are refused.
    /// </summary>
    /// <value>No default.</value>
    public string? ConnectionString { get; set; }

    /// <summary>
    /// How long an operation waits for another connection's write lock (SQLite's <c>busy_timeout</c>) before it fails
    /// with an exception, which the executor turns into a fail-closed 503.
    /// </summary>
    /// <value>5 seconds; from 1 millisecond to 10 minutes.</value>
    public TimeSpan BusyTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The table holding the records; a plain SQL identifier (letters, digits, underscores).</summary>
    /// <value><c>idem_records</c>.</value>
    public string TableName { get; set; } = "idem_records";

    /// <summary>
    /// While a caller waits for an in-flight key, how often the row is re-read to notice a change made by another
    /// process on the same file (changes made through any store instance of this process wake waiters at once).
    /// <see cref="Timeout.InfiniteTimeSpan"/> turns the re-reads off, leaving them to the caller's own polling.
    /// </summary>
    /// <value>500 milliseconds; positive or <see cref="Timeout.InfiniteTimeSpan"/>.</value>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(500);
}
