using Microsoft.Extensions.DependencyInjection;

namespace Idem;

/// <summary>Returned by <c>AddIdempotency()</c>; store packages extend it (<c>.UseSqliteStore(…)</c>, <c>.UsePostgreSqlStore(…)</c>).</summary>
public interface IIdempotencyBuilder
{
    /// <summary>The services being configured.</summary>
    IServiceCollection Services { get; }
}

/// <summary>Store registration shared by every store package.</summary>
public static class IdempotencyBuilderExtensions
{
    /// <summary>Uses <paramref name="factory"/> to create the one store, replacing any store registered before.</summary>
    public static IIdempotencyBuilder UseStore(this IIdempotencyBuilder builder, Func<IServiceProvider, IIdempotencyStore> factory)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(factory);
        for (var i = builder.Services.Count - 1; i >= 0; i--)
        {
            if (builder.Services[i].ServiceType == typeof(IIdempotencyStore))
            {
                builder.Services.RemoveAt(i);
            }
        }

        builder.Services.AddSingleton(factory);
        return builder;
    }

    /// <summary>Keeps records in process memory: for tests and single-process apps that accept losing them on restart.</summary>
    public static IIdempotencyBuilder UseInMemoryStore(this IIdempotencyBuilder builder) =>
        builder.UseStore(static sp => new InMemoryIdempotencyStore(sp.GetService<TimeProvider>() ?? TimeProvider.System));

    /// <summary>
    /// Puts <paramref name="cacheFactory"/>'s cache of completed responses in front of the store registered so far, which
    /// stays the authority for every claim (see <see cref="TieredIdempotencyStore"/>). Call it after the store's
    /// <c>Use…Store</c>; a store registered later replaces the tiered store entirely. By default a node-local cache of
    /// completed records goes in front of the tiered store (<see cref="TieredIdempotencyStoreOptions.LocalReplayCache"/>;
    /// set it to <see langword="null"/> to turn it off).
    /// </summary>
    /// <param name="builder">The builder from <c>AddIdempotency()</c>, with a durable store registered.</param>
    /// <param name="cacheFactory">Creates the cache; the tiered store disposes it (and the durable store) with itself.</param>
    /// <param name="configure">Adjusts the cache's deadline and back-off.</param>
    /// <exception cref="InvalidOperationException">No store is registered yet.</exception>
    public static IIdempotencyBuilder WithResponseCache(
        this IIdempotencyBuilder builder,
        Func<IServiceProvider, IIdempotencyResponseCache> cacheFactory,
        Action<TieredIdempotencyStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(cacheFactory);
        var options = new TieredIdempotencyStoreOptions();
        configure?.Invoke(options);
        options.Validate(); // Misconfiguration fails at registration, not on the first request.

        ServiceDescriptor? durable = null;
        for (var i = builder.Services.Count - 1; i >= 0; i--)
        {
            if (builder.Services[i].ServiceType == typeof(IIdempotencyStore))
            {
                durable = builder.Services[i];
                break;
            }
        }

        if (durable is null || durable.IsKeyedService)
        {
            throw new InvalidOperationException("Register the durable store (e.g. UsePostgreSqlStore) before adding a response cache in front of it.");
        }

        // The durable store is created here, not by the container, so the tiered store owns and disposes it.
        Func<IServiceProvider, IIdempotencyStore> createDurable = durable switch
        {
            { ImplementationFactory: { } factory } => sp => (IIdempotencyStore)factory(sp),
            { ImplementationInstance: IIdempotencyStore instance } => _ => instance,
            { ImplementationType: { } type } => sp => (IIdempotencyStore)ActivatorUtilities.CreateInstance(sp, type),
            _ => throw new InvalidOperationException("The registered store cannot be wrapped by a response cache."),
        };
        var ownsDurable = durable.ImplementationInstance is null;

        return builder.UseStore(sp =>
        {
            var store = createDurable(sp);
            IIdempotencyResponseCache cache;
            try
            {
                cache = cacheFactory(sp);
            }
            catch
            {
                if (ownsDurable)
                {
                    (store as IDisposable)?.Dispose();
                }

                throw;
            }

            var tiered = new TieredIdempotencyStore(
                store,
                cache,
                options,
                sp.GetService<TimeProvider>(),
                sp.GetService<Microsoft.Extensions.Logging.ILoggerFactory>(),
                sp.GetService<IdempotencyMetrics>(),
                ownsDurable,
                ownsCache: true);
            return options.LocalReplayCache is { } local
                ? new LocalReplayCacheStore(tiered, local, sp.GetService<TimeProvider>(), sp.GetService<IdempotencyMetrics>(), ownsInner: true)
                : tiered;
        });
    }
}
