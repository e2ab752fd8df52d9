using Idem.Redis;
using Microsoft.Extensions.DependencyInjection;

namespace Idem.Gateway;

/// <summary>Registers the store named by <c>Idem:Store</c>; never falls back silently to another one.</summary>
internal static class GatewayStores
{
    public static void Use(IIdempotencyBuilder builder, GatewayOptions options, string contentRoot)
    {
        switch (options.Store)
        {
            case GatewayStoreKind.InMemory:
                builder.UseInMemoryStore();
                break;
            case GatewayStoreKind.Sqlite:
                if (string.IsNullOrWhiteSpace(options.Sqlite.Path))
                {
                    throw new InvalidOperationException("Idem:Store is Sqlite but Idem:Sqlite:Path is empty.");
                }

                UseSqlite(builder, Path.GetFullPath(options.Sqlite.Path, contentRoot));
                break;
            case GatewayStoreKind.PostgreSql:
                if (string.IsNullOrWhiteSpace(options.PostgreSql.ConnectionString))
                {
                    throw new InvalidOperationException("Idem:Store is PostgreSql but Idem:PostgreSql:ConnectionString is empty (e.g. Idem__PostgreSql__ConnectionString=\"Host=db;Username=idem;Password=…;Database=idem\").");
                }

                UsePostgreSql(builder, options.PostgreSql.ConnectionString, options.PostgreSql.CreateSchema);
                break;
            case GatewayStoreKind.Redis:
                builder.UseRedisStore(RequireRedis(options), o => ConfigureRedis(o, options.Redis));
                break;
            case GatewayStoreKind.Tiered:
                // Claims in PostgreSQL (the authority), completed responses read through Redis: a Redis outage costs
                // speed, never a duplicate.
                if (string.IsNullOrWhiteSpace(options.PostgreSql.ConnectionString))
                {
                    throw new InvalidOperationException("Idem:Store is Tiered but Idem:PostgreSql:ConnectionString is empty; the tiered store keeps its claims in PostgreSQL (e.g. Idem__PostgreSql__ConnectionString=\"Host=db;Username=idem;Password=…;Database=idem\").");
                }

                var redis = RequireRedis(options);
                UsePostgreSql(builder, options.PostgreSql.ConnectionString, options.PostgreSql.CreateSchema);
                builder.WithRedisResponseCache(redis, o => ConfigureRedis(o, options.Redis));
                break;
            default:
                throw new InvalidOperationException($"Unknown Idem:Store '{options.Store}'.");
        }
    }

    private static string RequireRedis(GatewayOptions options) =>
        string.IsNullOrWhiteSpace(options.Redis.Configuration)
            ? throw new InvalidOperationException($"Idem:Store is {options.Store} but Idem:Redis:Configuration is empty (a StackExchange.Redis configuration string, e.g. Idem__Redis__Configuration=\"redis:6379,password=…\").")
            : options.Redis.Configuration;

    // The builder has already set the store's or the cache's own default key prefix.
    private static void ConfigureRedis(RedisIdempotencyStoreOptions redis, GatewayOptions.RedisSection section)
    {
        if (!string.IsNullOrEmpty(section.KeyPrefix))
        {
            redis.KeyPrefix = section.KeyPrefix;
        }

        if (section.OperationTimeout is { } timeout)
        {
            redis.OperationTimeout = timeout;
        }
    }

    private static void UseSqlite(IIdempotencyBuilder builder, string path) => builder.UseSqliteStore(path);

    private static void UsePostgreSql(IIdempotencyBuilder builder, string connectionString, bool createSchema) =>
        builder.UsePostgreSqlStore(connectionString, o => o.CreateSchemaAutomatically = createSchema);
}
