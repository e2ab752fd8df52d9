using System.Globalization;
using System.Text;
using AnyAscii;

namespace Idem;

/// <summary>
/// URL slugs from names: <c>"My Community"</c> → <c>my-community</c>, <c>"Café Zürich"</c> → <c>cafe-zurich</c>
/// (Unicode transliterated to ASCII by AnyAscii), then <c>my-community-1</c>, <c>-2</c>… when taken. The allocation
/// that makes them unique lives in the data packages (Idem.EntityFrameworkCore, Idem.PostgreSql, Idem.Sqlite).
/// </summary>
public static class Slug
{
    /// <summary>The longest numeric suffix, in digits (a <see cref="long"/>'s 19 minus one, so it always parses).</summary>
    public const int MaxSuffixDigits = 18;

    /// <summary>
    /// Makes the base slug of a name: transliterated to ASCII, lower case, every run of characters other than
    /// <c>a-z</c> and <c>0-9</c> turned into one <c>-</c>, no <c>-</c> at either end, cut to
    /// <see cref="SlugOptions.MaxLength"/> (at a character, then trimmed of a trailing <c>-</c>).
    /// </summary>
    /// <param name="name">The name, for example <c>"Café Zürich"</c>.</param>
    /// <param name="options">The maximum length and the fallback; <see cref="SlugOptions.Default"/> when <see langword="null"/>.</param>
    /// <returns>The base slug, for example <c>cafe-zurich</c>.</returns>
    /// <exception cref="ArgumentException">
    /// The name has no letters or digits once transliterated (for example <c>"!!!"</c>) and
    /// <see cref="SlugOptions.Fallback"/> is not set.
    /// </exception>
    public static string FromName(string name, SlugOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        options ??= SlugOptions.Default;
        options.Validate();
        var result = Normalize(name, options.MaxLength);
        if (result.Length > 0)
        {
            return result;
        }

        if (options.Fallback is { } fallback)
        {
            var fallbackSlug = Normalize(fallback, options.MaxLength);
            return fallbackSlug.Length > 0
                ? fallbackSlug
                : throw new ArgumentException("SlugOptions.Fallback must contain letters or digits.", nameof(options));
        }

        throw new ArgumentException(
            $"The name '{name}' has no letters or digits to make a slug of; give SlugOptions.Fallback (for example \"item\") to use a fixed slug for such names.",
            nameof(name));
    }

    private static string Normalize(string name, int maxLength)
    {
        var ascii = name.Transliterate();
        var slug = new StringBuilder(Math.Min(ascii.Length, maxLength));
        var pendingDash = false;
        foreach (var c in ascii)
        {
            var lower = char.ToLowerInvariant(c);
            if (lower is (>= 'a' and <= 'z') or (>= '0' and <= '9'))
            {
                if (pendingDash && slug.Length > 0)
                {
                    slug.Append('-');
                }

                pendingDash = false;
                slug.Append(lower);
            }
            else
            {
                pendingDash = true;
            }

            if (slug.Length >= maxLength)
            {
                break;
            }
        }

        return Cut(slug.ToString(), maxLength);
    }

    /// <summary>
    /// The slug with a numeric suffix: <c>my-community-3</c>. When the result would be longer than
    /// <paramref name="maxLength"/>, the base is cut (never the suffix) and trimmed of a trailing <c>-</c>.
    /// </summary>
    /// <param name="baseSlug">A base slug from <see cref="FromName"/>.</param>
    /// <param name="suffix">The suffix, from 1 to 18 digits.</param>
    /// <param name="maxLength">The longest slug, suffix included.</param>
    /// <returns>The suffixed slug.</returns>
    /// <exception cref="ArgumentException">The suffix leaves no room for any of the base.</exception>
    public static string WithSuffix(string baseSlug, long suffix, int maxLength)
    {
        ArgumentNullException.ThrowIfNull(baseSlug);
        ArgumentOutOfRangeException.ThrowIfLessThan(suffix, 1);
        var digits = suffix.ToString(CultureInfo.InvariantCulture);
        if (digits.Length > MaxSuffixDigits)
        {
            throw new ArgumentOutOfRangeException(nameof(suffix), suffix, $"A slug suffix has at most {MaxSuffixDigits} digits.");
        }

        var head = Cut(baseSlug, maxLength - 1 - digits.Length);
        if (head.Length == 0)
        {
            throw new ArgumentException($"A slug of at most {maxLength} characters leaves no room for '{baseSlug}' before the suffix -{digits}.", nameof(maxLength));
        }

        return head + "-" + digits;
    }

    /// <summary>Cuts a slug to a length (none when not positive) and trims trailing dashes; the data packages mirror this in SQL.</summary>
    internal static string Cut(string slug, int length) =>
        length <= 0 ? string.Empty : (slug.Length > length ? slug[..length] : slug).TrimEnd('-');
}
