namespace Idem;

/// <summary>
/// Validates the value of an <c>Idempotency-Key</c> header: 1–255 visible ASCII characters (0x21–0x7E).
/// The Structured Field string form (<c>"abc"</c>, with <c>\"</c> and <c>\\</c> escapes) is accepted and means its content.
/// </summary>
public static class IdempotencyKey
{
    /// <summary>The longest key accepted, in characters.</summary>
    public const int MaxLength = 255;

    /// <summary>Parses one header value into a key.</summary>
    /// <param name="value">The raw header value.</param>
    /// <param name="key">The key, unquoted, when the value is valid.</param>
    /// <param name="error">Why the value is invalid, written for the client, when it is not.</param>
    /// <returns><see langword="true"/> when <paramref name="value"/> is a valid key.</returns>
    public static bool TryParse(string? value, out string key, out string? error)
    {
        key = string.Empty;
        if (string.IsNullOrEmpty(value))
        {
            error = "The Idempotency-Key header is empty; send 1 to 255 visible ASCII characters.";
            return false;
        }

        var candidate = value;
        // A value that opens with a quote is a Structured Field string and must be a well-formed one.
        if (value[0] == '"')
        {
            if (value.Length < 2 || value[^1] != '"' || !TryUnquote(value.AsSpan(1, value.Length - 2), out candidate))
            {
                error = "The Idempotency-Key header is a malformed quoted string; only \\\" and \\\\ may be escaped.";
                return false;
            }
        }

        if (candidate.Length == 0)
        {
            error = "The Idempotency-Key header is empty; send 1 to 255 visible ASCII characters.";
            return false;
        }

        if (candidate.Length > MaxLength)
        {
            error = $"The Idempotency-Key header is {candidate.Length} characters long; the limit is {MaxLength}.";
            return false;
        }

        foreach (var c in candidate)
        {
            if (c < '\x21' || c > '\x7E')
            {
                error = "The Idempotency-Key header may contain only visible ASCII characters (0x21-0x7E), without spaces.";
                return false;
            }
        }

        key = candidate;
        error = null;
        return true;
    }

    private static bool TryUnquote(ReadOnlySpan<char> inner, out string result)
    {
        if (inner.IndexOfAny('"', '\\') < 0)
        {
            result = inner.ToString();
            return true;
        }

        var builder = new System.Text.StringBuilder(inner.Length);
        for (var i = 0; i < inner.Length; i++)
        {
            var c = inner[i];
            if (c == '"')
            {
                result = string.Empty;
                return false;
            }

            if (c == '\\')
            {
                if (i + 1 >= inner.Length || (inner[i + 1] != '"' && inner[i + 1] != '\\'))
                {
                    result = string.Empty;
                    return false;
                }

                c = inner[++i];
            }

            builder.Append(c);
        }

        result = builder.ToString();
        return true;
    }
}
