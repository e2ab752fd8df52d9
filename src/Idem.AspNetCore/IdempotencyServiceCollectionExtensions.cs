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
    /// Adds the idempotency executor, metrics, background purge, OpenAPI header documentation and the default store:
    /// SQLite in <c>idem.db</c> in the content root, so protection never silently does nothing. Choose another store on
    /// the returned builder (<c>.UseSqliteStore(path)</c>, <c>.UsePostgreSqlStore(…)</c>, <c>.UseInMemoryStore()</c>).
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
        }).ValidateOnStart();
        services.AddMetrics();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<IdempotencyMetrics>();
        services.TryAddSingleton(static sp => new IdempotencyExecutor(
            sp.GetRequiredService<IIdempotencyStore>(),
            sp.GetRequiredService<IdempotencyMetrics>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<IdempotencyExecutor>>()));
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, IdempotencyPurgeService>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<Microsoft.AspNetCore.Hosting.IStartupFilter, IdempotencyEndpointValidation>());
        if (!services.Any(static d => d.ServiceType == typeof(OpenApiMarker)))
        {
            services.AddSingleton<OpenApiMarker>();
            services.AddSingleton<IConfigureOptions<Microsoft.AspNetCore.OpenApi.OpenApiOptions>>(static sp =>
                new ConfigureAllOptions(o => IdempotencyOpenApi.AddHeaderTransformer(o, () => sp.GetRequiredService<IOptions<IdempotencyOptions>>().Value)));
        }

        var builder = new IdempotencyBuilder(services);
        if (!services.Any(static d => d.ServiceType == typeof(IIdempotencyStore)))
        {
            // Incident 1: there is always a store. The default is durable and needs no server.
            builder.UseStore(static sp => new Idem.Sqlite.SqliteIdempotencyStore(
                new Idem.Sqlite.SqliteIdempotencyStoreOptions
                {
                    Path = Path.Combine(sp.GetService<IHostEnvironment>()?.ContentRootPath ?? AppContext.BaseDirectory, DefaultSqlitePath),
                },
                sp.GetRequiredService<TimeProvider>()));
        }

        return builder;
    }

    internal const string DefaultSqlitePath = "idem.db";

    private sealed class OpenApiMarker;

    // IConfigureNamedOptions so the transformer reaches every named OpenAPI document, not only the default one.
    private sealed class ConfigureAllOptions(Action<Microsoft.AspNetCore.OpenApi.OpenApiOptions> configure) : IConfigureNamedOptions<Microsoft.AspNetCore.OpenApi.OpenApiOptions>
    {
        public void Configure(string? name, Microsoft.AspNetCore.OpenApi.OpenApiOptions options) => configure(options);

        public void Configure(Microsoft.AspNetCore.OpenApi.OpenApiOptions options) => configure(options);
    }

    private sealed class IdempotencyBuilder(IServiceCollection services) : IIdempotencyBuilder
    {
        public IServiceCollection Services { get; } = services;
    }
}
