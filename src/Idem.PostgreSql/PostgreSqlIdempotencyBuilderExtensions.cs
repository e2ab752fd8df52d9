using Idem;
using Idem.PostgreSql;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the PostgreSQL store on an <see cref="IIdempotencyBuilder"/>.</summary>
public static class PostgreSqlIdempotencyBuilderExtensions
{
    /// <summary>Keeps records in PostgreSQL at <paramref name="connectionString"/>; the store owns its connection pool.</summary>
    /// <param name="builder">The builder from <c>AddIdempotency()</c>.</param>
    /// <param name="connectionString">The Npgsql connection string.</param>
    /// <param name="configure">Adjusts the options (table, channel, <see cref="PostgreSqlIdempotencyStoreOptions.CreateSchemaAutomatically"/>, …).</param>
    public static IIdempotencyBuilder UsePostgreSqlStore(
        this IIdempotencyBuilder builder,
        string connectionString,
        Action<PostgreSqlIdempotencyStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        return builder.UsePostgreSqlStore(options =>
        {
            options.ConnectionString = connectionString;
            configure?.Invoke(options);
        });
    }

    /// <summary>Keeps records in PostgreSQL through <paramref name="dataSource"/>, which the application owns and disposes.</summary>
    /// <param name="builder">The builder from <c>AddIdempotency()</c>.</param>
    /// <param name="dataSource">The data source (connection pool) to use.</param>
    /// <param name="configure">Adjusts the options (table, channel, <see cref="PostgreSqlIdempotencyStoreOptions.CreateSchemaAutomatically"/>, …).</param>
    public static IIdempotencyBuilder UsePostgreSqlStore(
        this IIdempotencyBuilder builder,
        NpgsqlDataSource dataSource,
        Action<PostgreSqlIdempotencyStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(dataSource);
        return builder.UsePostgreSqlStore(options =>
        {
            options.DataSource = dataSource;
            configure?.Invoke(options);
        });
    }

    private static IIdempotencyBuilder UsePostgreSqlStore(this IIdempotencyBuilder builder, Action<PostgreSqlIdempotencyStoreOptions> configure)
    {
        var options = new PostgreSqlIdempotencyStoreOptions();
        configure(options);
        options.Validate(); // Misconfiguration fails at registration, not on the first request.
        return builder.UseStore(sp => new PostgreSqlIdempotencyStore(options, sp.GetService<ILoggerFactory>()));
    }
}
