using Microsoft.AspNetCore.Http;

namespace Idem.AspNetCore;

/// <summary>What Idem did with the current request; in <c>HttpContext.Features</c> on protected endpoints.</summary>
public interface IIdempotencyFeature
{
    /// <summary>Whether the request runs under a claim (it had a key and a protected method).</summary>
    bool IsProtected { get; }

    /// <summary>
    /// The fencing token of the current claim. A handler that writes outside Idem's store can record it and refuse
    /// writes from an older owner. <see cref="Guid.Empty"/> when not protected.
    /// </summary>
    Guid OwnerToken { get; }

    /// <summary>
    /// The running execution: its joined transaction (<see cref="IdempotentExecution.GetTransactionAsync(CancellationToken)"/>)
    /// and recovery points (<see cref="IdempotentExecution.RunPhaseAsync{T}(string, Func{IdempotentPhase, ValueTask{T}}, System.Text.Json.JsonSerializerOptions?, CancellationToken)"/>).
    /// <see langword="null"/> when not protected.
    /// </summary>
    IdempotentExecution? Execution { get; }
}

/// <summary>Reaches the running <see cref="IdempotentExecution"/> from a handler.</summary>
public static class IdempotencyHttpContextExtensions
{
    /// <summary>The execution of this protected request (for its joined transaction and recovery points).</summary>
    /// <param name="context">The request.</param>
    /// <exception cref="InvalidOperationException">The request does not run under a claim (no key, unprotected method or endpoint).</exception>
    public static IdempotentExecution GetIdempotentExecution(this HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.Features.Get<IIdempotencyFeature>()?.Execution
            ?? throw new InvalidOperationException(
                "This request does not run under an idempotency claim (no Idempotency-Key, an unprotected method, or an endpoint without RequireIdempotency), "
                + "so it has no joined transaction or recovery points. Check IIdempotencyFeature.IsProtected first, or require a key on the endpoint.");
    }
}

internal sealed class IdempotencyFeature : IIdempotencyFeature
{
    public bool IsProtected { get; set; }

    public Guid OwnerToken { get; set; }

    public IdempotentExecution? Execution { get; set; }

    /// <summary>In a joined transaction: everything the handler wrote, held until the commit.</summary>
    public MemoryStream? Held { get; set; }

    /// <summary>The response captured under the claim; its pooled buffer lives until the store has completed.</summary>
    public ResponseCaptureStream? Capture { get; set; }

    public void ReleaseCapture()
    {
        Capture?.Dispose();
        Capture = null;
    }
}

internal static class MiddlewareGuard
{
    // Protection that silently does nothing (an idempotency check that was never wired up) is how duplicates reach
    // production unnoticed. An endpoint marked as protected that is reached without the middleware having seen it is
    // a configuration error, and it must be loud.
    public static void ThrowIfMiddlewareMissing(HttpContext context)
    {
        if (context.Features.Get<IIdempotencyFeature>() is null)
        {
            throw new InvalidOperationException(
                "This endpoint requires idempotency, but the idempotency middleware did not run for it. " +
                "Call app.UseIdempotency() after app.UseRouting() (and after authentication, so keys are scoped to the user).");
        }
    }
}

/// <summary>
/// Makes <see cref="HttpContext.RequestAborted"/> fire on Idem's execution timeout instead of the client's disconnect:
/// a retry after a timeout needs the work of the first attempt to finish and be stored.
/// </summary>
internal sealed class DetachedRequestLifetimeFeature(Microsoft.AspNetCore.Http.Features.IHttpRequestLifetimeFeature original, CancellationToken executionToken)
    : Microsoft.AspNetCore.Http.Features.IHttpRequestLifetimeFeature
{
    public CancellationToken RequestAborted
    {
        get => executionToken;
        set { }
    }

    public void Abort() => original.Abort();
}
