using System.Diagnostics;
using Idem.AspNetCore;
using Microsoft.AspNetCore.Http;

namespace Idem.Gateway;

/// <summary>The gateway's correlation id: accepted from the client when well-formed, derived or generated otherwise.</summary>
internal static class GatewayCorrelation
{
    /// <summary>
    /// Settles the request's id and rewrites the request's header to it (so it goes upstream): the client's own when it
    /// sent exactly one well-formed value; otherwise the trace id of the current trace (a tracer's activity, or the
    /// client's <c>traceparent</c>), so logs and traces line up; otherwise a random trace id.
    /// </summary>
    public static string Accept(HttpContext context, string header)
    {
        var headers = context.Request.Headers;
        var incoming = headers[header];
        string id;
        if (incoming.Count == 1 && IsValid(incoming[0]))
        {
            id = incoming[0]!;
        }
        else
        {
            id = Activity.Current is { } activity ? activity.TraceId.ToHexString()
                : ActivityContext.TryParse(headers.TraceParent, traceState: null, out var parent) ? parent.TraceId.ToHexString()
                : ActivityTraceId.CreateRandom().ToHexString();
            headers[header] = id;
        }

        context.Features.Set(new CorrelationFeature(id));
        return id;
    }

    private static bool IsValid(string? value) =>
        !string.IsNullOrEmpty(value) && value.Length <= 128 && !value.AsSpan().ContainsAnyExceptInRange('\x21', '\x7E');
}
