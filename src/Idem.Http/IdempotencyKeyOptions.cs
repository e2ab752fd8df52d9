namespace Idem.Http;

/// <summary>How <c>AddIdempotencyKeys()</c> gives keys to the requests of one named HttpClient.</summary>
public sealed class IdempotencyKeyOptions
{
    /// <summary>The request header that carries the key.</summary>
    /// <value>Default <c>Idempotency-Key</c>.</value>
    public string HeaderName { get; set; } = "Idempotency-Key";

    /// <summary>Methods that get a key; others (GET, HEAD…) are sent untouched. Match the methods the server protects.</summary>
    /// <value>Default POST and PATCH, Idem's default protected methods.</value>
    public ISet<HttpMethod> Methods { get; } = new HashSet<HttpMethod> { HttpMethod.Post, HttpMethod.Patch };

    /// <summary>Makes the key of a request that has none; called once per logical request, never per attempt.</summary>
    /// <value>Default a random GUID (<c>Guid.NewGuid().ToString()</c>).</value>
    public Func<HttpRequestMessage, string> KeyFactory { get; set; } = static _ => Guid.NewGuid().ToString();
}
