using System.Collections.Frozen;
using Microsoft.Net.Http.Headers;

namespace Idem.AspNetCore;

/// <summary>Which response headers are stored for replay: representation metadata only, never cookies or hop-by-hop headers.</summary>
internal sealed class ResponseHeaderAllowList
{
    private static readonly string[] BuiltIn =
    [
        HeaderNames.ContentType, HeaderNames.ContentEncoding, HeaderNames.ContentLanguage, HeaderNames.Location,
        HeaderNames.ETag, HeaderNames.LastModified, HeaderNames.CacheControl, HeaderNames.Vary,
    ];

    private static readonly FrozenSet<string> Forbidden = new[]
    {
        HeaderNames.SetCookie, HeaderNames.Connection, "Keep-Alive", HeaderNames.ProxyAuthenticate, "Proxy-Authorization",
        HeaderNames.TE, HeaderNames.Trailer, HeaderNames.TransferEncoding, HeaderNames.Upgrade, HeaderNames.ContentLength,
        "Idempotent-Replayed", Idem.IdempotencyDiagnostics.OriginTraceHeaderName,
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    private readonly string[] _names;

    public ResponseHeaderAllowList(IEnumerable<string> extra) =>
        _names = BuiltIn.Concat(extra).Distinct(StringComparer.OrdinalIgnoreCase).ToArray();

    public static bool IsForbidden(string name) => Forbidden.Contains(name);

    public IReadOnlyList<KeyValuePair<string, string>> Capture(Microsoft.AspNetCore.Http.IHeaderDictionary headers)
    {
        List<KeyValuePair<string, string>>? captured = null;
        foreach (var name in _names)
        {
            if (headers.TryGetValue(name, out var values))
            {
                foreach (var value in values)
                {
                    if (value is not null)
                    {
                        (captured ??= new(4)).Add(new(name, value));
                    }
                }
            }
        }

        return captured ?? (IReadOnlyList<KeyValuePair<string, string>>)[];
    }
}
