using System.Diagnostics.Metrics;
using Idem;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers Idem's core services, without ASP.NET Core: for workers, queue consumers and other non-web hosts.</summary>
public static class IdempotencyCoreServiceCollectionExtensions
{
    /// <summary>The message of the startup error when no store is registered; names the calls that choose one.</summary>
    internal const string NoStoreMessage =
        "Idem has no idempotency store, so nothing would be protected. Choose one on the builder that AddIdempotency() " +
        "or AddIdempotencyCore() returns: .UseSqliteStore() (package Idem.Sqlite: an embedded file, no server), " +
        ".UsePostgreSqlStore(connectionString) (Idem.PostgreSql: many nodes), .UseRedisStore(configuration) (Idem.Redis), " +
        "or .UseInMemoryStore() (tests and throwaway setups: records are lost on restart).";

    /// <summary>
    /// Adds the <see cref="IdempotencyExecutor"/>, <see cref="IdempotencyMetrics"/>, <see cref="TimeProvider.System"/>
    /// (unless a clock is registered) and the background purge of expired records (a hosted service, run by any
    /// <c>IHost</c>; <see cref="IdempotencyPurgeOptions"/>). Choose the store on the returned builder (<c>.UseSqliteStore()</c>,
    /// <c>.UsePostgreSqlStore(…)</c>, <c>.UseRedisStore(…)</c>, <c>.UseInMemoryStore()</c>); resolving the executor
    /// without one throws an <see cref="InvalidOperationException"/> that names them. ASP.NET Core apps call
    /// <c>AddIdempotency()</c> (package Idem.AspNetCore) instead, which calls this.
    /// </summary>
    /// <param name="services">The services to add to.</param>
    /// <returns>The builder that store packages extend.</returns>
    public static IIdempotencyBuilder AddIdempotencyCore(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(static sp => new IdempotencyMetrics(sp.GetService<IMeterFactory>() ?? sp.GetRequiredService<OwnMeterFactory>()));
        services.TryAddSingleton<OwnMeterFactory>();
        services.TryAddSingleton(static sp => new IdempotencyExecutor(
            sp.GetService<IIdempotencyStore>() ?? throw new InvalidOperationException(NoStoreMessage),
            sp.GetRequiredService<IdempotencyMetrics>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<ILogger<IdempotencyExecutor>>()));
        services.AddOptions<IdempotencyPurgeOptions>().Validate(static o =>
        {
            o.Validate();
            return true;
        });
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, IdempotencyPurgeService>());
        return new IdempotencyBuilder(services);
    }

    private sealed class IdempotencyBuilder(IServiceCollection services) : IIdempotencyBuilder
    {
        public IServiceCollection Services { get; } = services;
    }

    /// <summary>
    /// The meters of a container without <c>AddMetrics()</c> (a bare <c>ServiceCollection</c>); hosts register
    /// their own <see cref="IMeterFactory"/>, which is used instead. Disposed with the container, with its meters.
    /// </summary>
    private sealed class OwnMeterFactory : IMeterFactory
    {
        private readonly List<Meter> _meters = [];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options.Name, options.Version, options.Tags, scope: this);
            lock (_meters)
            {
                _meters.Add(meter);
            }

            return meter;
        }

        public void Dispose()
        {
            lock (_meters)
            {
                foreach (var meter in _meters)
                {
                    meter.Dispose();
                }

                _meters.Clear();
            }
        }
    }
}
