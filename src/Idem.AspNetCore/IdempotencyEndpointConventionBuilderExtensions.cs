using Idem.AspNetCore;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Metadata;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Marks endpoints as protected by Idem.</summary>
public static class IdempotencyEndpointConventionBuilderExtensions
{
    /// <summary>Protects the endpoint (or every endpoint of the group) with the app's idempotency settings.</summary>
    public static TBuilder RequireIdempotency<TBuilder>(this TBuilder builder)
        where TBuilder : IEndpointConventionBuilder => builder.RequireIdempotency(static _ => { });

    /// <summary>Protects the endpoint (or every endpoint of the group) with settings of its own.</summary>
    /// <exception cref="ArgumentException">A setting is out of range (for example a zero retention or an empty method list).</exception>
    public static TBuilder RequireIdempotency<TBuilder>(this TBuilder builder, Action<IdempotencyEndpointOptions> configure)
        where TBuilder : IEndpointConventionBuilder
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        var options = new IdempotencyEndpointOptions();
        configure(options);
        try
        {
            options.Validate(Idem.IdempotencyPolicy.Default);
        }
        catch (ArgumentException ex)
        {
            // Thrown where the endpoint is declared; the same check runs again at startup over the app's defaults.
            throw new ArgumentException($"Invalid idempotency settings: {ex.Message}", nameof(configure), ex);
        }

        var metadata = new IdempotencyEndpointMetadata(options);
        builder.Add(endpoint =>
        {
            endpoint.Metadata.Add(metadata);
            foreach (var status in new[] { StatusCodes.Status400BadRequest, StatusCodes.Status409Conflict, StatusCodes.Status422UnprocessableEntity, StatusCodes.Status503ServiceUnavailable })
            {
                endpoint.Metadata.Add(new ProducesResponseTypeMetadata(status, typeof(Microsoft.AspNetCore.Mvc.ProblemDetails), [IdempotencyProblems.ContentType]));
            }

            // The guard wraps the request delegate rather than adding an endpoint filter: a filter makes a minimal API
            // handler run through the filter pipeline (an invocation context allocated per request), while a
            // convention sees the delegate of handlers, RequestDelegate endpoints and controllers alike. An endpoint
            // without a delegate (MVC's link-generation-only endpoints) never runs.
            if (endpoint.RequestDelegate is { } inner)
            {
                endpoint.RequestDelegate = context =>
                {
                    MiddlewareGuard.ThrowIfMiddlewareMissing(context);
                    return inner(context);
                };
            }
        });
        return builder;
    }
}
