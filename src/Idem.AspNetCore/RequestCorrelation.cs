using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;

namespace Idem.AspNetCore;

/// <summary>
/// The request's correlation id, settled once per request by whichever middleware asks first (Idem's middleware, or a
/// host's own middleware in front of it) and kept as a request feature: Idem's problem answers carry it as
/// <c>requestId</c>, its logs as <c>RequestId</c>.
/// </summary>
public sealed class RequestCorrelation
{
    private RequestCorrelation(string requestId) => RequestId = requestId;

    /// <summary>The id: 1 to 128 visible ASCII characters.</summary>
    public string RequestId { get; }

    /// <summary>
    /// Returns the request's correlation, settling it on the first call: the client's own id when it sent exactly one
    /// well-formed value (1 to 128 visible ASCII characters) in <paramref name="headerName"/>; otherwise the trace id of
    /// the current trace (a tracer's activity, or the client's <c>traceparent</c>), so logs and traces line up; otherwise
    /// a random trace id. Later calls return the same instance whatever header they name.
    /// </summary>
    /// <param name="context">The request.</param>
    /// <param name="headerName">The correlation header, for example <c>X-Request-Id</c>.</param>
    /// <returns>The request's correlation.</returns>
    public static RequestCorrelation Accept(HttpContext context, string headerName)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(headerName);
        if (context.Features.Get<RequestCorrelation>() is { } settled)
        {
            return settled;
        }

        var headers = context.Request.Headers;
        if (!TryGetClientId(headers[headerName], out var id))
        {
            id = Activity.Current is { } activity ? activity.TraceId.ToHexString()
                : ActivityContext.TryParse(headers.TraceParent, traceState: null, out var parent) ? parent.TraceId.ToHexString()
                : ActivityTraceId.CreateRandom().ToHexString();
        }

        var correlation = new RequestCorrelation(id);
        context.Features.Set(correlation);
        return correlation;
    }

    /// <summary>Opens the request's log scope on <paramref name="logger"/>: <c>RequestId</c> as a structured property and <c>RequestId:…</c> as text.</summary>
    /// <param name="logger">The logger whose provider keeps the scope.</param>
    /// <returns>The scope, to dispose when the request ends; <see langword="null"/> when the provider keeps no scopes.</returns>
    public IDisposable? BeginLogScope(ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(logger);
        return logger.BeginScope(new CorrelationScope(RequestId));
    }

    private static bool TryGetClientId(StringValues values, [NotNullWhen(true)] out string? id)
    {
        id = values.Count == 1 ? values[0] : null;
        if (string.IsNullOrEmpty(id) || id.Length > 128 || id.AsSpan().ContainsAnyExceptInRange('\x21', '\x7E'))
        {
            id = null;
            return false;
        }

        return true;
    }
}
