using System.Globalization;

namespace Idem.Cli.Commands.Dedupe;

/// <summary>
/// The natural key of a row: its values in <see cref="Columns"/> as a tuple, or (<see cref="SortedSet"/>) as the
/// unordered set of those values, sorted ordinally and joined by <see cref="Separator"/>, so (alice, bob) and
/// (bob, alice) are one key. A row with a NULL in any key column has no key (a unique index lets NULLs repeat).
/// </summary>
internal sealed record NaturalKey(IReadOnlyList<string> Columns, bool SortedSet, string Separator)
{
    /// <summary>The key as text, as <c>backfill</c> writes it; <see langword="null"/> when a value is NULL.</summary>
    public string? TextOf(ReadOnlySpan<object?> values)
    {
        var parts = new string[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            if (values[i] is null)
            {
                return null;
            }

            parts[i] = Format(values[i]!);
        }

        if (SortedSet)
        {
            Array.Sort(parts, StringComparer.Ordinal);
        }

        return string.Join(Separator, parts);
    }

    /// <summary>The key for grouping: for a tuple, the values joined by a control character no value is expected to hold.</summary>
    public string? GroupOf(ReadOnlySpan<object?> values)
    {
        if (SortedSet)
        {
            return TextOf(values);
        }

        var parts = new string[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            if (values[i] is null)
            {
                return null;
            }

            parts[i] = Format(values[i]!);
        }

        return string.Join('\u001f', parts);
    }

    public string Describe() => SortedSet
        ? $"the sorted set of ({string.Join(", ", Columns)}) joined by '{Separator}'"
        : $"({string.Join(", ", Columns)})";

    public static string Display(string group) => group.Replace('\u001f', '|');

    public static string Format(object value) => value switch
    {
        string s => s,
        byte[] bytes => Convert.ToHexStringLower(bytes),
        DateTime d => d.ToString("O", CultureInfo.InvariantCulture),
        DateTimeOffset d => d.ToString("O", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? string.Empty,
    };
}
