using Microsoft.Extensions.DependencyInjection;

namespace Idem;

/// <summary>Registers <see cref="LocalReplayCacheStore"/> in front of the store registered so far.</summary>
public static class LocalReplayCacheBuilderExtensions
{
    /// <summary>
    /// Serves replays of completed records from this node's memory, in front of the store registered so far (which stays
    /// the authority for every claim, completion and read). Call it last, after the store's <c>Use…Store</c> and any
    /// <c>With…ResponseCache</c>; a store registered later replaces it entirely. A tiered store registered with
    /// <c>With…ResponseCache</c> has one already: this replaces it with one of these options.
    /// </summary>
    /// <param name="builder">The builder from <c>AddIdempotency()</c>, with a store registered.</param>
    /// <param name="configure">Adjusts the size bound, the clock tolerance and whether completions are cached.</param>
    /// <returns>The builder.</returns>
    /// <exception cref="InvalidOperationException">No store is registered yet, or an option is out of range.</exception>
    /// <example>
    /// <code>
    /// builder.Services.AddIdempotency()
    ///     .UsePostgreSqlStore(connectionString)
    ///     .WithLocalReplayCache(o => o.MaxBytes = 64 * 1024 * 1024);
    /// </code>
    /// </example>
    public static IIdempotencyBuilder WithLocalReplayCache(this IIdempotencyBuilder builder, Action<LocalReplayCacheOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = new LocalReplayCacheOptions();
        configure?.Invoke(options);
        options.Validate(); // Misconfiguration fails at registration, not on the first request.

        ServiceDescriptor? registered = null;
        for (var i = builder.Services.Count - 1; i >= 0; i--)
        {
            if (builder.Services[i].ServiceType == typeof(IIdempotencyStore))
            {
                registered = builder.Services[i];
                break;
            }
        }

        if (registered is null || registered.IsKeyedService)
        {
            throw new InvalidOperationException("Register the store (e.g. UsePostgreSqlStore) before adding a local replay cache in front of it.");
        }

        // The inner store is created here, not by the container, so the cache owns and disposes it.
        Func<IServiceProvider, IIdempotencyStore> createInner = registered switch
        {
            { ImplementationFactory: { } factory } => sp => (IIdempotencyStore)factory(sp),
            { ImplementationInstance: IIdempotencyStore instance } => _ => instance,
            { ImplementationType: { } type } => sp => (IIdempotencyStore)ActivatorUtilities.CreateInstance(sp, type),
            _ => throw new InvalidOperationException("The registered store cannot be wrapped by a local replay cache."),
        };
        var ownsInner = registered.ImplementationInstance is null;

        return builder.UseStore(sp =>
        {
            var inner = createInner(sp);
            return new LocalReplayCacheStore(
                inner is LocalReplayCacheStore existing ? existing.Detach() : inner, // the tiered store's default one, replaced
                options,
                sp.GetService<TimeProvider>(),
                sp.GetService<IdempotencyMetrics>(),
                ownsInner);
        });
    }
}
