using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Idem.AspNetCore;

/// <summary>
/// Idem's own answers, as <c>application/problem+json</c> (RFC 9457). They are never stored. Public so that a host
/// answering for Idem (the gateway, about its upstream) writes them in exactly the same form.
/// </summary>
public static class IdempotencyProblems
{
    /// <summary>The media type of every answer: <c>application/problem+json</c>.</summary>
    public const string ContentType = "application/problem+json";

    /// <summary>
    /// Writes the answer: status, <c>Cache-Control: no-store</c>, <c>Retry-After</c> when given, and a body with
    /// <c>type</c>, <c>title</c>, <c>status</c>, <c>detail</c>, <c>instance</c> and the request's correlation id.
    /// </summary>
    /// <param name="context">The request being answered; nothing may have been written to its response yet.</param>
    /// <param name="status">The status code.</param>
    /// <param name="title">A short, fixed summary of the problem.</param>
    /// <param name="detail">What happened to this request and what the client can do.</param>
    /// <param name="retryAfter">When the client may retry; rounded up to whole seconds, at least 1.</param>
    /// <param name="cancellationToken">Cancels writing the body (Idem's own callers pass none: the answer is small).</param>
    public static Task WriteAsync(HttpContext context, int status, string title, string detail, TimeSpan? retryAfter = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = ContentType;
        response.Headers.CacheControl = "no-store";
        if (retryAfter is { } delay)
        {
            response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(delay.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        }

        using var buffer = new MemoryStream(256);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("type", TypeFor(status));
            writer.WriteString("title", title);
            writer.WriteNumber("status", status);
            writer.WriteString("detail", detail);
            writer.WriteString("instance", context.Request.Path.Value);
            if (context.Features.Get<RequestCorrelation>() is { } correlation)
            {
                writer.WriteString("requestId", correlation.RequestId);
            }

            writer.WriteEndObject();
        }

        response.ContentLength = buffer.Length;
        return response.Body.WriteAsync(buffer.GetBuffer(), 0, (int)buffer.Length, cancellationToken);
    }

    private static string TypeFor(int status) => status switch
    {
        400 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.1",
        409 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.10",
        413 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.14",
        422 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.21",
        503 => "https://www.rfc-editor.org/rfc/rfc9110#section-15.6.4",
        _ => "about:blank",
    };
}

/// <summary>
/// The log scope of one request: <c>RequestId</c> as a structured property (JSON console, OpenTelemetry) and
/// <c>RequestId:…</c> as text (simple console).
/// </summary>
internal sealed class CorrelationScope(string requestId) : IReadOnlyList<KeyValuePair<string, object?>>
{
    public int Count => 1;

    public KeyValuePair<string, object?> this[int index] => index == 0
        ? new KeyValuePair<string, object?>("RequestId", requestId)
        : throw new ArgumentOutOfRangeException(nameof(index));

    public IEnumerator<KeyValuePair<string, object?>> GetEnumerator()
    {
        yield return this[0];
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

    public override string ToString() => "RequestId:" + requestId;
}
