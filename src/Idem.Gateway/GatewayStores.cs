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
            case GatewayStoreKind.Tiered:
                throw new InvalidOperationException(
                    $"Idem:Store={options.Store} is not available in this version of Idem Gateway: there is no Redis store yet. " +
                    "Use Sqlite (one gateway node) or PostgreSql (several nodes). The gateway does not fall back to another store silently.");
            default:
                throw new InvalidOperationException($"Unknown Idem:Store '{options.Store}'.");
        }
    }

    private static void UseSqlite(IIdempotencyBuilder builder, string path) => builder.UseSqliteStore(path);

    private static void UsePostgreSql(IIdempotencyBuilder builder, string connectionString, bool createSchema) =>
        builder.UsePostgreSqlStore(connectionString, o => o.CreateSchemaAutomatically = createSchema);
}
