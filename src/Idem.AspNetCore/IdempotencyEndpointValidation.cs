using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Idem.AspNetCore;

/// <summary>
/// Checks every protected endpoint's settings once the pipeline is built, so a bad value stops the application at
/// startup instead of answering 500 to the first request that reaches the endpoint.
/// </summary>
internal sealed class IdempotencyEndpointValidation : IStartupFilter
{
    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        // The endpoints are registered while the pipeline is built (UseEndpoints), so they are known only after next.
        next(app);
        Validate(app.ApplicationServices);
    };

    internal static void Validate(IServiceProvider services)
    {
        var defaults = services.GetRequiredService<IOptions<IdempotencyOptions>>().Value.DefaultPolicy;
        foreach (var source in services.GetServices<EndpointDataSource>())
        {
            foreach (var endpoint in source.Endpoints)
            {
                if (endpoint.Metadata.GetMetadata<IIdempotencyEndpointMetadata>() is not { } metadata)
                {
                    continue;
                }

                try
                {
                    metadata.Options.Validate(defaults);
                }
                catch (ArgumentException ex)
                {
                    throw new InvalidOperationException($"Invalid idempotency settings on endpoint '{endpoint.DisplayName}': {ex.Message}", ex);
                }
            }
        }
    }
}
