using System.Net.Http.Headers;

namespace Idem.Http;

/// <summary>Per-request keys and what Idem said about a response.</summary>
public static class IdempotencyHttpMessageExtensions
{
    private const int MaxKeyLength = 255;

    /// <summary>Sends <paramref name="request"/>, and every retry of it, with <paramref name="key"/>.</summary>
    /// <exception cref="ArgumentException">The key is empty, longer than 255 characters or not visible ASCII, which an Idem server refuses with 400.</exception>
    public static HttpRequestMessage SetIdempotencyKey(this HttpRequestMessage request, string key)
    {
        ArgumentNullException.ThrowIfNull(request);
        ValidateKey(key);
        request.Options.Set(IdempotencyRequestOptions.Key, key);
        return request;
    }

    /// <summary>Sends <paramref name="request"/> without a key.</summary>
    public static HttpRequestMessage DisableIdempotencyKey(this HttpRequestMessage request)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.Options.Set(IdempotencyRequestOptions.Disabled, true);
        return request;
    }

    /// <summary>The key this request was sent with, once sent through the handler (or set with <see cref="SetIdempotencyKey"/>).</summary>
    public static string? GetIdempotencyKey(this HttpRequestMessage request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request.Options.TryGetValue(IdempotencyRequestOptions.Key, out var key) ? key : null;
    }

    /// <summary>The key the request of this response was sent with.</summary>
    public static string? GetIdempotencyKey(this HttpResponseMessage response)
    {
        ArgumentNullException.ThrowIfNull(response);
        return response.RequestMessage?.GetIdempotencyKey();
    }

    /// <summary>
    /// <see langword="true"/> when the server replayed a stored response (<c>Idempotent-Replayed: true</c>): the work
    /// had already been done, by this logical request's earlier attempt or by another caller with the same key.
    /// </summary>
    public static bool IsIdempotentReplay(this HttpResponseMessage response)
    {
        ArgumentNullException.ThrowIfNull(response);
        return FirstValue(response.Headers, "Idempotent-Replayed") is { } value && value.Equals("true", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>The server's request id (<c>X-Request-Id</c>), for logs and support tickets.</summary>
    public static string? GetRequestId(this HttpResponseMessage response)
    {
        ArgumentNullException.ThrowIfNull(response);
        return FirstValue(response.Headers, "X-Request-Id");
    }

    internal static void ValidateKey(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (key.Length is 0 or > MaxKeyLength)
        {
            throw new ArgumentException($"An idempotency key has 1 to {MaxKeyLength} characters; this one has {key.Length}.", nameof(key));
        }

        foreach (var c in key)
        {
            if (c is < '!' or > '~')
            {
                throw new ArgumentException("An idempotency key is visible ASCII (0x21-0x7E) only.", nameof(key));
            }
        }
    }

    private static string? FirstValue(HttpResponseHeaders headers, string name) =>
        headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;
}
