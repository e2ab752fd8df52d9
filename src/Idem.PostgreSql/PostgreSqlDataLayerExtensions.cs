using System.Data.Common;
using Idem.DataLayer;
using Npgsql;

namespace Idem.PostgreSql;

/// <summary>
/// The data layer over plain Npgsql: create-or-get by natural key and unique-slug inserts, on the caller's own
/// connection and transaction (or one connection taken from the caller's data source), each one SQL statement in the
/// common case. A unique violation on the natural key or the slug never reaches the caller; any other error does,
/// untouched.
/// </summary>
public static class PostgreSqlDataLayerExtensions
{
    /// <summary>
    /// A kept NpgsqlCommand runs prepared as long as the connection keeps its physical connection; after a close and
    /// open it may have another one, which <see cref="NpgsqlCommand.IsPrepared"/> tells.
    /// </summary>
    private static readonly CommandKeeping KeptCommands = new(keep: true, isPrepared: static command => ((NpgsqlCommand)command).IsPrepared);

    /// <summary>
    /// Inserts the row unless one with the same natural key exists, and returns the one row either way. One statement
    /// reads the row by its key and, only when it found none, inserts with <c>INSERT … ON CONFLICT (key) DO NOTHING
    /// RETURNING …</c> (the unique index decides, never a check-then-insert); one more read only when a concurrent insert
    /// of the same key committed while it ran. Runs in <paramref name="transaction"/> when given (opens and closes
    /// <paramref name="connection"/> when it is closed).
    /// </summary>
    /// <remarks>
    /// After 4 consecutive calls of <paramref name="definition"/> that found their row, the next sends only the plain read
    /// first; after 4 that created theirs, only the insert; a call that breaks the streak costs one more statement and
    /// sends the next back to the combined one (the package README has the details). On a connection kept open across
    /// calls the commands are kept too, prepared, until the connection closes.
    /// </remarks>
    /// <typeparam name="T">What <paramref name="read"/> makes of the row.</typeparam>
    /// <param name="connection">The caller's connection.</param>
    /// <param name="definition">The table, inserted columns, natural key and returned columns.</param>
    /// <param name="values">One value per inserted column, in order (a value may be an <see cref="NpgsqlParameter"/>, for example a typed NULL).</param>
    /// <param name="read">Reads the returned columns from ordinal 0.</param>
    /// <param name="transaction">The caller's transaction on <paramref name="connection"/>, if any.</param>
    /// <param name="cancellationToken">Cancels the statement.</param>
    /// <returns>The row and whether this call created it.</returns>
    /// <exception cref="ArgumentException">The values do not match the columns, or a key value is null.</exception>
    /// <exception cref="PostgresException">Any error other than a conflict on the natural key, untouched.</exception>
    public static Task<CreateOrGetResult<T>> CreateOrGetAsync<T>(
        this NpgsqlConnection connection,
        CreateOrGetDefinition definition,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        NpgsqlTransaction? transaction = null,
        CancellationToken cancellationToken = default) =>
        DataLayerCommands.CreateOrGetAsync(connection, transaction, SqlDialect.PostgreSql, definition, values, read, KeptCommands, cancellationToken);

    /// <summary>
    /// <see cref="CreateOrGetAsync{T}(NpgsqlConnection, CreateOrGetDefinition, IReadOnlyList{object?}, Func{DbDataReader, T}, NpgsqlTransaction?, CancellationToken)"/>
    /// on one connection opened from <paramref name="dataSource"/> for this call (no transaction of its own: the statement commits alone).
    /// </summary>
    public static async Task<CreateOrGetResult<T>> CreateOrGetAsync<T>(
        this NpgsqlDataSource dataSource,
        CreateOrGetDefinition definition,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var connection = await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            return await DataLayerCommands.CreateOrGetAsync(connection, null, SqlDialect.PostgreSql, definition, values, read, CommandKeeping.None, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Inserts the row with a unique slug made from <paramref name="name"/> (<c>my-community</c>, then
    /// <c>my-community-1</c>…). One statement picks the next free slug and inserts; the unique index on the slug column
    /// decides. A candidate a concurrent insert took sends the statement on to the next one, up to 8 consecutive
    /// candidates in the same statement; only when all of them were taken is another statement tried (at most
    /// <see cref="SlugOptions.MaxAttempts"/>, each spreading its candidates wider). No lock is taken.
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
    /// <exception cref="PostgresException">Any error other than a conflict on the slug, untouched.</exception>
    /// <remarks>
    /// The next suffix is found with a byte-order range on the slug column (<c>COLLATE "C"</c>): on a large table give
    /// that column <c>COLLATE "C"</c> (slugs are ASCII) so the prefix search uses its unique index.
    /// Under contention suffixes may skip numbers.
    /// </remarks>
    public static Task<T> InsertWithUniqueSlugAsync<T>(
        this NpgsqlConnection connection,
        UniqueSlugDefinition definition,
        string name,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        NpgsqlTransaction? transaction = null,
        CancellationToken cancellationToken = default) =>
        DataLayerCommands.InsertWithUniqueSlugAsync(connection, transaction, SqlDialect.PostgreSql, definition, name, values, read, KeptCommands, cancellationToken);

    /// <summary>
    /// <see cref="InsertWithUniqueSlugAsync{T}(NpgsqlConnection, UniqueSlugDefinition, string, IReadOnlyList{object?}, Func{DbDataReader, T}, NpgsqlTransaction?, CancellationToken)"/>
    /// on one connection opened from <paramref name="dataSource"/> for this call.
    /// </summary>
    public static async Task<T> InsertWithUniqueSlugAsync<T>(
        this NpgsqlDataSource dataSource,
        UniqueSlugDefinition definition,
        string name,
        IReadOnlyList<object?> values,
        Func<DbDataReader, T> read,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var connection = await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            return await DataLayerCommands.InsertWithUniqueSlugAsync(connection, null, SqlDialect.PostgreSql, definition, name, values, read, CommandKeeping.None, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// <see langword="true"/> when <paramref name="exception"/> (or one it wraps, such as EF Core's
    /// <c>DbUpdateException</c>) is PostgreSQL's unique violation (SQLSTATE 23505), on
    /// <paramref name="constraintName"/> when given.
    /// </summary>
    public static bool IsUniqueViolation(this Exception exception, string? constraintName = null)
    {
        for (var current = exception; current is not null; current = current.InnerException)
        {
            if (current is PostgresException { SqlState: PostgresErrorCodes.UniqueViolation } postgres)
            {
                return constraintName is null || string.Equals(postgres.ConstraintName, constraintName, StringComparison.Ordinal);
            }
        }

        return false;
    }
}
