namespace Idem;

/// <summary>How unique slugs are made and allocated.</summary>
public sealed class SlugOptions
{
    /// <summary>The shared default options.</summary>
    public static SlugOptions Default { get; } = new();

    /// <summary>
    /// The longest slug, suffix included, in characters. A long name is cut to make room for the suffix
    /// (<c>my-long-name-12</c>), never the suffix itself.
    /// </summary>
    /// <value>64. At least 8.</value>
    public int MaxLength { get; init; } = 64;

    /// <summary>
    /// The most insert statements one allocation may try before <see cref="SlugAllocationException"/>. Each statement
    /// computes the next free suffix itself; another attempt is needed only when a concurrent insert took the same
    /// suffix between the statement's read and its insert (PostgreSQL under contention), and each retry spreads its
    /// candidate over a wider range so that contenders stop colliding.
    /// </summary>
    /// <value>10. At least 1.</value>
    public int MaxAttempts { get; init; } = 10;

    /// <summary>
    /// The slug used for a name with no letters or digits once transliterated (<c>"!!!"</c>), for example
    /// <c>"item"</c>; <see langword="null"/> to refuse such a name with an <see cref="ArgumentException"/>.
    /// </summary>
    /// <value><see langword="null"/>: such names are refused.</value>
    public string? Fallback { get; init; }

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxLength, 8, nameof(MaxLength));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxAttempts, 1, nameof(MaxAttempts));
    }
}
