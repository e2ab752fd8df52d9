using System.Diagnostics;
using System.Globalization;

namespace Idem;

/// <summary>
/// Carries the trace context of the activity that executed a request inside its stored record, so that each replay's
/// activity links to it. It rides as one extra stored header, <see cref="IdempotencyDiagnostics.OriginTraceHeaderName"/>
/// (a W3C <c>traceparent</c> value), last in the list: every store keeps headers already, so no store format changes, a
/// record written before (without it) replays as it always did, and it is taken out again before anything is replayed.
/// </summary>
internal static class OriginTrace
{
    /// <summary>Returns <paramref name="response"/> with the trace context of <paramref name="activity"/> appended, or as it is without one.</summary>
    public static StoredResponse Attach(StoredResponse response, Activity? activity)
    {
        if (activity is null || activity.IdFormat != ActivityIdFormat.W3C)
        {
            return response;
        }

        var headers = response.Headers;
        var withTrace = new KeyValuePair<string, string>[headers.Count + 1];
        for (var i = 0; i < headers.Count; i++)
        {
            withTrace[i] = headers[i];
        }

        withTrace[^1] = new(IdempotencyDiagnostics.OriginTraceHeaderName, Format(activity.Context));
        return new StoredResponse(response.StatusCode, withTrace, response.Body) { BodyOmitted = response.BodyOmitted };
    }

    /// <summary>
    /// Returns <paramref name="stored"/> without its trace context (as it was before <see cref="Attach"/>), and links
    /// <paramref name="activity"/> to the activity it names. A record without one is returned as it is.
    /// </summary>
    public static StoredResponse Detach(StoredResponse stored, Activity? activity)
    {
        var headers = stored.Headers;
        if (headers.Count == 0 || !string.Equals(headers[^1].Key, IdempotencyDiagnostics.OriginTraceHeaderName, StringComparison.Ordinal))
        {
            return stored;
        }

        if (activity is not null && ActivityContext.TryParse(headers[^1].Value, null, isRemote: true, out var origin))
        {
            activity.AddLink(new ActivityLink(origin));
            activity.SetTag("idem.origin.trace_id", origin.TraceId.ToHexString());
        }

        var rest = new KeyValuePair<string, string>[headers.Count - 1];
        for (var i = 0; i < rest.Length; i++)
        {
            rest[i] = headers[i];
        }

        return new StoredResponse(stored.StatusCode, rest, stored.Body) { BodyOmitted = stored.BodyOmitted };
    }

    private static string Format(ActivityContext context) => string.Create(
        CultureInfo.InvariantCulture,
        $"00-{context.TraceId.ToHexString()}-{context.SpanId.ToHexString()}-{(byte)context.TraceFlags:x2}");
}
