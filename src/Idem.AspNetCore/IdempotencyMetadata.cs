namespace Idem.AspNetCore;

/// <summary>Endpoint metadata that marks an endpoint as protected; added by <c>RequireIdempotency</c> or <see cref="IdempotentAttribute"/>.</summary>
public interface IIdempotencyEndpointMetadata
{
    /// <summary>The endpoint's settings.</summary>
    IdempotencyEndpointOptions Options { get; }
}

internal sealed class IdempotencyEndpointMetadata(IdempotencyEndpointOptions options) : IIdempotencyEndpointMetadata
{
    public IdempotencyEndpointOptions Options { get; } = options;
}

/// <summary>
/// Protects an MVC controller or action: POST and PATCH requests with an <c>Idempotency-Key</c> execute once and replay.
/// Requires <c>app.UseIdempotency()</c> after routing; a request that reaches the action without it fails loudly.
/// </summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Method, AllowMultiple = false, Inherited = true)]
public sealed class IdempotentAttribute : Attribute, IIdempotencyEndpointMetadata, Microsoft.AspNetCore.Mvc.Filters.IAsyncResourceFilter
{
    private IdempotencyEndpointOptions? _options;

    /// <summary>Whether a request without a key is refused with 400.</summary>
    public bool RequireKey { get; set; }

    /// <summary>Reject a request whose key is in flight with 409 at once instead of waiting.</summary>
    public bool RejectWhenInFlight { get; set; }

    /// <summary>Retention in seconds; 0 uses the app default.</summary>
    public int RetentionSeconds { get; set; }

    /// <summary>Lease in seconds; 0 uses the app default.</summary>
    public int LeaseSeconds { get; set; }

    /// <summary>The protected methods; <see langword="null"/> uses the app default (POST, PATCH).</summary>
    public string[]? Methods { get; set; }

    /// <summary>The largest stored response body in bytes; 0 uses the app default.</summary>
    public int MaxStoredBodyBytes { get; set; }

    /// <summary>Run unprotected (counted) instead of answering 503 when the store is down.</summary>
    public bool FailOpen { get; set; }

    /// <summary>Run the action in a joined transaction (see <see cref="IdempotencyEndpointOptions.JoinedTransaction"/>).</summary>
    public bool JoinedTransaction { get; set; }

    /// <inheritdoc />
    public IdempotencyEndpointOptions Options => _options ??= new IdempotencyEndpointOptions
    {
        RequireKey = RequireKey ? true : null,
        ConflictBehavior = RejectWhenInFlight ? Idem.ConflictBehavior.Reject : null,
        Retention = RetentionSeconds > 0 ? TimeSpan.FromSeconds(RetentionSeconds) : null,
        Lease = LeaseSeconds > 0 ? TimeSpan.FromSeconds(LeaseSeconds) : null,
        Methods = Methods,
        MaxStoredBodyBytes = MaxStoredBodyBytes > 0 ? MaxStoredBodyBytes : null,
        StoreFailureMode = FailOpen ? StoreFailureMode.FailOpen : null,
        JoinedTransaction = JoinedTransaction ? true : null,
    };

    /// <inheritdoc />
    public Task OnResourceExecutionAsync(Microsoft.AspNetCore.Mvc.Filters.ResourceExecutingContext context, Microsoft.AspNetCore.Mvc.Filters.ResourceExecutionDelegate next)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(next);
        MiddlewareGuard.ThrowIfMiddlewareMissing(context.HttpContext);
        return next();
    }
}
