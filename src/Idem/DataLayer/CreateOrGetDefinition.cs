using Microsoft.Extensions.Logging;

namespace Idem;

/// <summary>
/// The shape of a create-or-get on a table, for the ADO.NET helpers of Idem.PostgreSql and Idem.Sqlite: which columns
/// are inserted, which of them form the natural key (a unique index or constraint on exactly those columns must
/// exist) and which columns the call returns. Build it once and reuse it; it holds no connection.
/// </summary>
/// <example>
/// <code>
/// var chats = new CreateOrGetDefinition("chats", columns: ["id", "participants_key"], keyColumns: ["participants_key"], returning: ["id"]);
/// </code>
/// </example>
public sealed class CreateOrGetDefinition
{
    /// <summary>Creates the definition.</summary>
    /// <param name="table">The table's name, unquoted (it is quoted for you).</param>
    /// <param name="columns">The inserted columns, in the order of the values each call passes.</param>
    /// <param name="keyColumns">The natural key: one or more of <paramref name="columns"/>, covered by one unique index.</param>
    /// <param name="returning">The columns read back, in the order the caller's reader sees them (ordinal 0 first).</param>
    /// <exception cref="ArgumentException">A list is empty, has a blank or repeated name, or a key column is not inserted.</exception>
    public CreateOrGetDefinition(string table, IReadOnlyList<string> columns, IReadOnlyList<string> keyColumns, IReadOnlyList<string> returning)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(table);
        Table = table;
        var inserted = DataLayerNames.Check(columns, nameof(columns));
        Columns = inserted;
        KeyColumns = DataLayerNames.Check(keyColumns, nameof(keyColumns));
        Returning = DataLayerNames.Check(returning, nameof(returning));
        KeyOrdinals = [.. KeyColumns.Select(key =>
        {
            var index = Array.IndexOf(inserted, key);
            return index >= 0 ? index : throw new ArgumentException($"The key column '{key}' is not among the inserted columns.", nameof(keyColumns));
        })];
    }

    /// <summary>The table's name, unquoted.</summary>
    public string Table { get; }

    /// <summary>The table's schema, unquoted; <see langword="null"/> for the connection's default (PostgreSQL only).</summary>
    /// <value><see langword="null"/>.</value>
    public string? Schema { get; init; }

    /// <summary>The inserted columns.</summary>
    public IReadOnlyList<string> Columns { get; }

    /// <summary>The natural key's columns.</summary>
    public IReadOnlyList<string> KeyColumns { get; }

    /// <summary>The returned columns.</summary>
    public IReadOnlyList<string> Returning { get; }

    /// <summary>Where resolved conflicts (Debug) are logged.</summary>
    /// <value><see langword="null"/>: not logged.</value>
    public ILogger? Logger { get; init; }

    /// <summary>The positions of <see cref="KeyColumns"/> in <see cref="Columns"/>.</summary>
    public IReadOnlyList<int> KeyOrdinals { get; }
}

/// <summary>
/// The shape of an insert that allocates a unique slug, for the ADO.NET helpers of Idem.PostgreSql and Idem.Sqlite.
/// The slug column must have a unique index of its own. Build it once and reuse it; it holds no connection.
/// </summary>
/// <example>
/// <code>
/// var communities = new UniqueSlugDefinition("communities", slugColumn: "slug", columns: ["id", "name"], returning: ["id", "slug"]);
/// </code>
/// </example>
public sealed class UniqueSlugDefinition
{
    /// <summary>Creates the definition.</summary>
    /// <param name="table">The table's name, unquoted.</param>
    /// <param name="slugColumn">The slug column, with a unique index on it alone.</param>
    /// <param name="columns">The other inserted columns, in the order of the values each call passes.</param>
    /// <param name="returning">The columns read back, in the order the caller's reader sees them.</param>
    /// <exception cref="ArgumentException">A name is blank or repeated, or the slug column is among <paramref name="columns"/>.</exception>
    public UniqueSlugDefinition(string table, string slugColumn, IReadOnlyList<string> columns, IReadOnlyList<string> returning)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(table);
        ArgumentException.ThrowIfNullOrWhiteSpace(slugColumn);
        Table = table;
        SlugColumn = slugColumn;
        Columns = DataLayerNames.Check(columns, nameof(columns), allowEmpty: true);
        Returning = DataLayerNames.Check(returning, nameof(returning));
        if (Columns.Contains(slugColumn))
        {
            throw new ArgumentException($"The slug column '{slugColumn}' is set by the allocation; leave it out of the inserted columns.", nameof(columns));
        }
    }

    /// <summary>The table's name, unquoted.</summary>
    public string Table { get; }

    /// <summary>The table's schema, unquoted; <see langword="null"/> for the connection's default (PostgreSQL only).</summary>
    /// <value><see langword="null"/>.</value>
    public string? Schema { get; init; }

    /// <summary>The slug column.</summary>
    public string SlugColumn { get; }

    /// <summary>The other inserted columns.</summary>
    public IReadOnlyList<string> Columns { get; }

    /// <summary>The returned columns.</summary>
    public IReadOnlyList<string> Returning { get; }

    /// <summary>Maximum length, attempts and fallback.</summary>
    /// <value><see cref="SlugOptions.Default"/>.</value>
    public SlugOptions Options { get; init; } = SlugOptions.Default;

    /// <summary>Where taken candidates (Debug) and exhausted allocations (Warning) are logged.</summary>
    /// <value><see langword="null"/>: not logged.</value>
    public ILogger? Logger { get; init; }
}

internal static class DataLayerNames
{
    public static string[] Check(IReadOnlyList<string> names, string parameter, bool allowEmpty = false)
    {
        ArgumentNullException.ThrowIfNull(names, parameter);
        if (names.Count == 0 && !allowEmpty)
        {
            throw new ArgumentException("At least one column is needed.", parameter);
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            if (string.IsNullOrWhiteSpace(name) || !seen.Add(name))
            {
                throw new ArgumentException($"Column names must be non-blank and distinct; got '{name}'.", parameter);
            }
        }

        return [.. names];
    }
}
