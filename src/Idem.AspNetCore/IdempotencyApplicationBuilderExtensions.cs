using Idem.AspNetCore;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Adds the idempotency middleware.</summary>
public static class IdempotencyApplicationBuilderExtensions
{
    /// <summary>
    /// Protects endpoints marked with <c>RequireIdempotency()</c> or <see cref="IdempotentAttribute"/>. Call it after
    /// <c>UseRouting()</c> and after authentication, so keys are scoped to the signed-in user.
    /// </summary>
    public static IApplicationBuilder UseIdempotency(this IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        return app.UseMiddleware<IdempotencyMiddleware>();
    }
}
