using Idem;
using Idem.Redis;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the Redis store, or a Redis cache of completed responses in front of a durable store, on an <see cref="IIdempotencyBuilder"/>.</summary>
public static class RedisIdempotencyBuilderExtensions
{
    /// <summary>Keeps records in Redis at <paramref name="configuration"/>; the store owns its multiplexer.</summary>
    /// <param name="builder">The builder from <c>AddIdempotency()</c>.</param>
    /// <param name="configuration">A StackExchange.Redis configuration string, e.g. <c>localhost:6379</c>.</param>
    /// <param name="configure">Adjusts the options (<see cref="RedisIdempotencyStoreOptions.KeyPrefix"/>, <see cref="RedisIdempotencyStoreOptions.OperationTimeout"/>).</param>
    public static IIdempotencyBuilder UseRedisStore(
        this IIdempotencyBuilder builder,
        string configuration,
        Action<RedisIdempotencyStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(configuration);
        var options = Configure(o => o.Configuration = configuration, RedisIdempotencyStoreOptions.DefaultKeyPrefix, configure);
        return builder.UseStore(sp => new RedisIdempotencyStore(options, sp.GetService<ILoggerFactory>()));
    }

    /// <summary>Keeps records in Redis through <paramref name="multiplexer"/>, which the application owns and disposes.</summary>
    /// <param name="builder">The builder from <c>AddIdempotency()</c>.</param>
    /// <param name="multiplexer">The connection to use.</param>
    /// <param name="configure">Adjusts the options (<see cref="RedisIdempotencyStoreOptions.KeyPrefix"/>, <see cref="RedisIdempotencyStoreOptions.OperationTimeout"/>).</param>
    public static IIdempotencyBuilder UseRedisStore(
        this IIdempotencyBuilder builder,
        IConnectionMultiplexer multiplexer,
        Action<RedisIdempotencyStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(multiplexer);
        var options = Configure(o => o.ConnectionMultiplexer = multiplexer, RedisIdempotencyStoreOptions.DefaultKeyPrefix, configure);
        return builder.UseStore(sp => new RedisIdempotencyStore(options, sp.GetService<ILoggerFactory>()));
    }

    /// <summary>
    /// Puts a Redis cache of completed responses at <paramref name="configuration"/> in front of the store registered
    /// so far (the tiered store: claims stay in the durable store, replays are read through Redis). A Redis outage then
    /// costs speed, never a duplicate: <c>.UsePostgreSqlStore(…).WithRedisResponseCache("redis:6379")</c>.
    /// </summary>
    /// <param name="builder">The builder from <c>AddIdempotency()</c>, with a durable store registered.</param>
    /// <param name="configuration">A StackExchange.Redis configuration string.</param>
    /// <param name="configure">Adjusts the cache's Redis options (key prefix default <c>idem-cache:</c>).</param>
    /// <param name="configureTiering">Adjusts the cache's deadline and back-off.</param>
    public static IIdempotencyBuilder WithRedisResponseCache(
        this IIdempotencyBuilder builder,
        string configuration,
        Action<RedisIdempotencyStoreOptions>? configure = null,
        Action<TieredIdempotencyStoreOptions>? configureTiering = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(configuration);
        var options = Configure(o => o.Configuration = configuration, RedisIdempotencyStoreOptions.DefaultCacheKeyPrefix, configure);
        return builder.WithResponseCache(_ => new RedisIdempotencyResponseCache(options), configureTiering);
    }

    /// <summary>
    /// Puts a Redis cache of completed responses, through <paramref name="multiplexer"/> (which the application owns),
    /// in front of the store registered so far; see <see cref="WithRedisResponseCache(IIdempotencyBuilder, string, Action{RedisIdempotencyStoreOptions}?, Action{TieredIdempotencyStoreOptions}?)"/>.
    /// </summary>
    /// <param name="builder">The builder from <c>AddIdempotency()</c>, with a durable store registered.</param>
    /// <param name="multiplexer">The connection to use.</param>
    /// <param name="configure">Adjusts the cache's Redis options (key prefix default <c>idem-cache:</c>).</param>
    /// <param name="configureTiering">Adjusts the cache's deadline and back-off.</param>
    public static IIdempotencyBuilder WithRedisResponseCache(
        this IIdempotencyBuilder builder,
        IConnectionMultiplexer multiplexer,
        Action<RedisIdempotencyStoreOptions>? configure = null,
        Action<TieredIdempotencyStoreOptions>? configureTiering = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(multiplexer);
        var options = Configure(o => o.ConnectionMultiplexer = multiplexer, RedisIdempotencyStoreOptions.DefaultCacheKeyPrefix, configure);
        return builder.WithResponseCache(_ => new RedisIdempotencyResponseCache(options), configureTiering);
    }

    private static RedisIdempotencyStoreOptions Configure(
        Action<RedisIdempotencyStoreOptions> connection,
        string keyPrefix,
        Action<RedisIdempotencyStoreOptions>? configure)
    {
        var options = new RedisIdempotencyStoreOptions { KeyPrefix = keyPrefix };
        connection(options);
        configure?.Invoke(options);
        options.Validate(); // Misconfiguration fails at registration, not on the first request.
        return options;
    }
}
