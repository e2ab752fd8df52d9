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
        if (!CorrelationFeature.TryGetClientId(headers[header], out var id))
        {
            id = Activity.Current is { } activity ? activity.TraceId.ToHexString()
                : ActivityContext.TryParse(headers.TraceParent, traceState: null, out var parent) ? parent.TraceId.ToHexString()
                : ActivityTraceId.CreateRandom().ToHexString();
            headers[header] = id;
        }

        context.Features.Set(new CorrelationFeature(id));
        return id;
    }
}
