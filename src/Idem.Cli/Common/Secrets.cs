using System.Text.RegularExpressions;

namespace Idem.Cli.Common;

/// <summary>Masks secrets in anything the tool prints: connection strings, Redis configurations, URLs with credentials.</summary>
internal static partial class Secrets
{
    public const string Mask = "***";

    /// <summary>
    /// Returns <paramref name="text"/> with the values of password-like settings (<c>Password=</c>, <c>pwd=</c>,
    /// <c>password=</c> in a Redis configuration, tokens and keys) and URL user-info passwords replaced by <c>***</c>.
    /// </summary>
    public static string Redact(string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            return text ?? string.Empty;
        }

        var masked = SettingPattern().Replace(text, m => m.Groups["name"].Value + "=" + Mask);
        return UrlPasswordPattern().Replace(masked, m => m.Groups["scheme"].Value + m.Groups["user"].Value + ":" + Mask + "@");
    }

    /// <summary>Redacts <paramref name="text"/> and also removes each of <paramref name="secrets"/> verbatim (for messages that quote them).</summary>
    public static string Redact(string? text, IEnumerable<string?> secrets)
    {
        var result = text ?? string.Empty;
        foreach (var secret in secrets)
        {
            foreach (var value in PasswordValues(secret))
            {
                result = result.Replace(value, Mask, StringComparison.Ordinal);
            }
        }

        return Redact(result);
    }

    private static IEnumerable<string> PasswordValues(string? connection)
    {
        if (string.IsNullOrEmpty(connection))
        {
            yield break;
        }

        foreach (Match match in SettingPattern().Matches(connection))
        {
            var value = match.Groups["value"].Value.Trim().Trim('\'', '"');
            if (value.Length >= 3)
            {
                yield return value;
            }
        }
    }

    [GeneratedRegex(@"(?<name>\b(?:password|pwd|passwd|pass|secret|token|api[-_]?key|access[-_]?key|user\s?password)\b)\s*=\s*(?<value>""[^""]*""|'[^']*'|[^;,\s]*)", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex SettingPattern();

    [GeneratedRegex(@"(?<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?<user>[^:/@\s]*):[^@/\s]*@", RegexOptions.CultureInvariant)]
    private static partial Regex UrlPasswordPattern();
}
