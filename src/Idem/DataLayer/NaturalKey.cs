using System.Text;

namespace Idem;

/// <summary>
/// Builds natural keys for unique columns: one stable string for an unordered set, such as the participants of a chat,
/// so that the same set in any order maps to the same row.
/// </summary>
public static class NaturalKey
{
    /// <summary>
    /// The default longest key, in characters: 512. A key of 512 characters takes at most 2,048 bytes in UTF-8, under
    /// PostgreSQL's B-tree entry limit (2,704 bytes), so a unique index on the column can hold any key this builds.
    /// </summary>
    public const int DefaultMaxLength = 512;

    /// <summary>The separator between members in a set key.</summary>
    public const char Separator = ',';

    /// <summary>
    /// Builds the key of an unordered set: the distinct members, sorted ordinally, joined with <see cref="Separator"/>.
    /// A member containing <c>,</c> or <c>\</c> has it escaped with <c>\</c>, so two different sets never share a key.
    /// For example <c>["bob", "alice", "bob"]</c> gives <c>alice,bob</c>.
    /// </summary>
    /// <param name="members">The members; none may be <see langword="null"/> or empty.</param>
    /// <param name="maxLength">The longest key allowed, in characters; <see cref="DefaultMaxLength"/> by default.</param>
    /// <returns>The key.</returns>
    /// <exception cref="ArgumentException">
    /// The set is empty, a member is null or empty, or the key would be longer than <paramref name="maxLength"/>.
    /// </exception>
    public static string FromSet(IEnumerable<string> members, int maxLength = DefaultMaxLength)
    {
        ArgumentNullException.ThrowIfNull(members);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 1);
        var sorted = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var member in members)
        {
            if (string.IsNullOrEmpty(member))
            {
                throw new ArgumentException("A set key's members must not be null or empty.", nameof(members));
            }

            sorted.Add(member);
        }

        if (sorted.Count == 0)
        {
            throw new ArgumentException("A set key needs at least one member.", nameof(members));
        }

        var key = new StringBuilder();
        foreach (var member in sorted)
        {
            if (key.Length > 0)
            {
                key.Append(Separator);
            }

            foreach (var c in member)
            {
                if (c is Separator or '\\')
                {
                    key.Append('\\');
                }

                key.Append(c);
            }

            if (key.Length > maxLength)
            {
                break;
            }
        }

        if (key.Length > maxLength)
        {
            throw new ArgumentException(
                $"The set key of {sorted.Count} members is longer than the maximum of {maxLength} characters; store a hash of the set instead, or raise the maximum if the column and its index allow.",
                nameof(members));
        }

        return key.ToString();
    }
}
