using System.Data.Common;
using Idem.DataLayer;
using Microsoft.Data.Sqlite;

namespace Idem.Sqlite;

/// <summary>
/// The data layer over plain Microsoft.Data.Sqlite: create-or-get by natural key and unique-slug inserts, on the
/// caller's own connection and transaction. A unique violation on the natural key or the slug never reaches the caller;
/// any other error does, untouched.
/// </summary>
public static class SqliteDataLayerExtensions
{
    /// <summary>A kept SqliteCommand stays prepared by itself until its connection closes.</summary>
    private static readonly CommandKeeping KeptCommands = new(keep: true, isPrepared: null);

    /// <summary>
    /// Inserts the row unless one with the same natural key exists, and returns the one row either way, with
    /// <c>INSERT … ON CONFLICT (key) DO NOTHING RETURNING …</c>: the unique index decides, never a check-then-insert.
    /// Runs in <paramref name="transaction"/> when given (Microsoft.Data.Sqlite requires it when the connection has
    /// one); opens and closes <paramref name="connection"/> when it is closed.
    /// </summary>
    /// <remarks>
    /// Without a transaction a read by the key goes first: SQLite serialises writers, and every insert attempt, even one
    /// that inserts nothing, takes the single write lock, while a read does not; so an existing row costs one read. When
    /// the read finds nothing the conflict-safe insert follows (it never assumes the row is absent), then one read only if
    /// a concurrent insert won. In <paramref name="transaction"/> the insert goes first and the read follows only on
    /// conflict: a read first could pin a snapshot that the insert cannot upgrade in WAL mode. On a connection kept open
    /// across calls the commands are kept too, prepared, until the connection closes.
    /// </remarks>
    /// <typeparam name="T">What <paramref name="read"/> makes of the row.</typeparam>
    /// <param name="connection">The caller's connection.</param>
    /// <param name="definition">The table, inserted columns, natural key and returned columns.</param>
    /// <param name="values">One value per inserted column, in order.</param>
    /// <param name="read">Reads the returned columns from ordinal 0.</param>
    /// <param name="transaction">The caller's transaction on <paramref name="connection"/>, if any.</param>
    /// <param name="cancellationToken">Cancels the statement.</param>
    /// <returns>The row and whether this call created it.</returns>
    /// <exception cref="ArgumentException">The values do not match the columns, or a key value is null.</exception>
    /// <exception cref="SqliteException">Any error other than a conflict on the natural key, untouched.</exception>
    public static Task<CreateOrGetResult<T>> CreateOrGetAsync<T>(
        this SqliteConnection connection,
        CreateOrGetDefinition definition,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        SqliteTransaction? transaction = null,
        CancellationToken cancellationToken = default) =>
        DataLayerCommands.CreateOrGetAsync(connection, transaction, SqlDialect.Sqlite, definition, values, read, KeptCommands, cancellationToken);

    /// <summary>
    /// Inserts the row with a unique slug made from <paramref name="name"/> (<c>my-community</c>, then
    /// <c>my-community-1</c>…): one statement finds the next free suffix and inserts, under SQLite's single writer, so
    /// it needs no retry unless the transaction's snapshot is stale; the unique index on the slug column decides, no
    /// lock of its own is taken, and at most <see cref="SlugOptions.MaxAttempts"/> statements are tried.
    /// </summary>
    /// <typeparam name="T">What <paramref name="read"/> makes of the row.</typeparam>
    /// <param name="connection">The caller's connection.</param>
    /// <param name="definition">The table, slug column, other columns, returned columns and slug options.</param>
    /// <param name="name">The name the slug is made from.</param>
    /// <param name="values">One value per inserted column of <paramref name="definition"/>, in order.</param>
    /// <param name="read">Reads the returned columns from ordinal 0.</param>
    /// <param name="transaction">The caller's transaction on <paramref name="connection"/>, if any.</param>
    /// <param name="cancellationToken">Cancels the statement.</param>
    /// <returns>The inserted row.</returns>
    /// <exception cref="ArgumentException">The name has no letters or digits (and no fallback is set), or the values do not match the columns.</exception>
    /// <exception cref="SlugAllocationException">Every attempt met a concurrent insert; nothing was inserted.</exception>
    /// <exception cref="SqliteException">Any error other than a conflict on the slug, untouched.</exception>
    public static Task<T> InsertWithUniqueSlugAsync<T>(
        this SqliteConnection connection,
        UniqueSlugDefinition definition,
        string name,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        SqliteTransaction? transaction = null,
        CancellationToken cancellationToken = default) =>
        DataLayerCommands.InsertWithUniqueSlugAsync(connection, transaction, SqlDialect.Sqlite, definition, name, values, read, KeptCommands, cancellationToken);

    /// <summary>
    /// <see langword="true"/> when <paramref name="exception"/> (or one it wraps, such as EF Core's
    /// <c>DbUpdateException</c>) is SQLite's unique or primary-key violation (<c>SQLITE_CONSTRAINT</c>, 19, extended
    /// <c>SQLITE_CONSTRAINT_UNIQUE</c>, 2067, or <c>SQLITE_CONSTRAINT_PRIMARYKEY</c>, 1555).
    /// </summary>
    public static bool IsUniqueViolation(this Exception exception)
    {
        for (var current = exception; current is not null; current = current.InnerException)
        {
            if (current is SqliteException { SqliteErrorCode: 19, SqliteExtendedErrorCode: 2067 or 1555 })
            {
                return true;
            }
        }

        return false;
    }
}
