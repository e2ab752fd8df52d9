using System.Diagnostics;

namespace Idem;

/// <summary>The <c>Idem</c> activity source.</summary>
/// <remarks>
/// Each protected request runs in one <c>idem.execute</c> activity tagged <c>idem.outcome</c>. A replay's activity carries
/// an <see cref="ActivityLink"/> to the activity that executed the original request (and its trace id in the tag
/// <c>idem.origin.trace_id</c>), so a trace viewer goes from any retry to the execution whose answer it got.
/// </remarks>
public static class IdempotencyDiagnostics
{
    /// <summary>The activity source's name.</summary>
    public const string ActivitySourceName = "Idem";

    /// <summary>
    /// The name under which a stored response keeps the W3C <c>traceparent</c> of the activity that executed it, as the
    /// last of its stored headers. Idem removes it before replaying, and refuses it as a header to capture, so no
    /// application header can collide with it.
    /// </summary>
    public const string OriginTraceHeaderName = "idem-origin-traceparent";

    internal static readonly ActivitySource Source = new(ActivitySourceName, typeof(IdempotencyDiagnostics).Assembly.GetName().Version?.ToString());
}
