using System.Diagnostics;

namespace Idem;

/// <summary>The <c>Idem</c> activity source.</summary>
public static class IdempotencyDiagnostics
{
    /// <summary>The activity source's name.</summary>
    public const string ActivitySourceName = "Idem";

    internal static readonly ActivitySource Source = new(ActivitySourceName, typeof(IdempotencyDiagnostics).Assembly.GetName().Version?.ToString());
}
