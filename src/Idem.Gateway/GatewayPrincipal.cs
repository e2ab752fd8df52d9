using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace Idem.Gateway;

/// <summary>
/// Who sent a request, as the gateway sees it: a SHA-256 of the credential (the <c>Authorization</c> header by default,
/// or a configured header or cookie). The gateway does not validate credentials (the upstream does); it only keeps
/// two callers' keys apart. Requests without the credential share the anonymous scope (the empty string).
/// </summary>
internal static class GatewayPrincipal
{
    public const string DefaultHeader = "Authorization";

    public static Func<HttpContext, string> Create(GatewayOptions.PrincipalSection options)
    {
        if (!string.IsNullOrWhiteSpace(options.Cookie))
        {
            var cookie = options.Cookie;
            return context => Hash(context.Request.Cookies[cookie]);
        }

        var header = string.IsNullOrWhiteSpace(options.Header) ? DefaultHeader : options.Header;
        return context =>
        {
            var values = context.Request.Headers[header];
            return values.Count == 0 ? string.Empty : Hash(values.ToString());
        };
    }

    private static string Hash(string? credential)
    {
        if (string.IsNullOrEmpty(credential))
        {
            return string.Empty;
        }

        // The credential never leaves this method: only its hash reaches the scope (which hashes it again).
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(credential), hash);
        return string.Concat("credential:", Convert.ToHexString(hash));
    }
}
