using Idem;
using Idem.AspNetCore;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers Idem.</summary>
public static class IdempotencyServiceCollectionExtensions
{
    /// <summary>
    /// Adds the idempotency executor, metrics and clock (<c>AddIdempotencyCore()</c>), the middleware's options, the
    /// background purge and OpenAPI header documentation. Choose the store on the returned builder:
    /// <c>.UseSqliteStore()</c> (package Idem.Sqlite: <c>idem.db</c> in the content root, no server),
    /// <c>.UsePostgreSqlStore(…)</c>, <c>.UseRedisStore(…)</c> or <c>.UseInMemoryStore()</c>. Without one the application
    /// fails at startup with an error naming these calls, so protection never silently does nothing.
    /// </summary>
    public static IIdempotencyBuilder AddIdempotency(this IServiceCollection services) => services.AddIdempotency(static _ => { });

    /// <summary>Adds Idem and configures <see cref="IdempotencyOptions"/>.</summary>
    public static IIdempotencyBuilder AddIdempotency(this IServiceCollection services, Action<IdempotencyOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);

        services.Configure(configure);
        services.AddOptions<IdempotencyOptions>().Validate(static o =>
        {
            o.Validate();
            return true;
        })
        .Validate<IServiceProviderIsService>(static (_, isService) => isService.IsService(typeof(IIdempotencyStore)), NoStoreMessage)
        .ValidateOnStart();
        services.AddMetrics();
        var builder = services.AddIdempotencyCore();
        // The purge itself is core's (workers need it too); the middleware's options keep their PurgeInterval.
        services.AddOptions<IdempotencyPurgeOptions>().Configure<IOptions<IdempotencyOptions>>(static (purge, o) => purge.Interval = o.Value.PurgeInterval);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<Microsoft.AspNetCore.Hosting.IStartupFilter, IdempotencyEndpointValidation>());
        if (!services.Any(static d => d.ServiceType == typeof(OpenApiMarker)))
        {
            services.AddSingleton<OpenApiMarker>();
            services.AddSingleton<IConfigureOptions<Microsoft.AspNetCore.OpenApi.OpenApiOptions>>(static sp =>
                new ConfigureAllOptions(o => IdempotencyOpenApi.AddHeaderTransformer(o, () => sp.GetRequiredService<IOptions<IdempotencyOptions>>().Value)));
        }

        return builder;
    }

    // An idempotency cache that was never configured makes every check silently do nothing (a real outage behind
    // duplicate creations); an app without a store stops at startup instead.
    internal const string NoStoreMessage =
        "AddIdempotency() has no idempotency store, so nothing would be protected. Choose one on the builder it returns: " +
        ".UseSqliteStore() (package Idem.Sqlite: idem.db in the content root, no server), " +
        ".UsePostgreSqlStore(connectionString) (Idem.PostgreSql: many nodes), .UseRedisStore(configuration) (Idem.Redis), " +
        "or .UseInMemoryStore() (tests and throwaway setups: records are lost on restart).";

    private sealed class OpenApiMarker;

    // IConfigureNamedOptions so the transformer reaches every named OpenAPI document, not only the default one.
    private sealed class ConfigureAllOptions(Action<Microsoft.AspNetCore.OpenApi.OpenApiOptions> configure) : IConfigureNamedOptions<Microsoft.AspNetCore.OpenApi.OpenApiOptions>
    {
        public void Configure(string? name, Microsoft.AspNetCore.OpenApi.OpenApiOptions options) => configure(options);

        public void Configure(Microsoft.AspNetCore.OpenApi.OpenApiOptions options) => configure(options);
    }
}
