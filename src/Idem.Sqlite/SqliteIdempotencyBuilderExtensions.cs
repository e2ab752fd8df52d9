using Idem;
using Idem.Sqlite;
using Microsoft.Extensions.Hosting;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers <see cref="SqliteIdempotencyStore"/> as the idempotency store.</summary>
public static class SqliteIdempotencyBuilderExtensions
{
    /// <summary>The file name <see cref="UseSqliteStore(IIdempotencyBuilder)"/> uses, in the host's content root.</summary>
    public const string DefaultPath = "idem.db";

    /// <summary>
    /// Keeps idempotency records in <c>idem.db</c> in the host's content root (the application's base directory when
    /// there is no host), created when missing: the zero-configuration store of a single node.
    /// </summary>
    /// <param name="builder">The builder returned by <c>AddIdempotency()</c> or <c>AddIdempotencyCore()</c>.</param>
    /// <returns>The builder.</returns>
    public static IIdempotencyBuilder UseSqliteStore(this IIdempotencyBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.UseStore(static sp => new SqliteIdempotencyStore(
            new SqliteIdempotencyStoreOptions
            {
                Path = Path.Combine(sp.GetService<IHostEnvironment>()?.ContentRootPath ?? AppContext.BaseDirectory, DefaultPath),
            },
            sp.GetService<TimeProvider>() ?? TimeProvider.System));
    }

    /// <summary>
    /// Keeps idempotency records in the SQLite database file at <paramref name="path"/> (created when missing, in WAL mode),
    /// replacing any store registered before. Leases and retention are judged by the registered
    /// <see cref="TimeProvider"/>, or the system clock when none is registered.
    /// </summary>
    /// <param name="builder">The builder returned by <c>AddIdempotency()</c>.</param>
    /// <param name="path">The database file, for example <c>idem.db</c>.</param>
    /// <param name="configure">Adjusts the options; validated here, at startup.</param>
    /// <returns>The builder.</returns>
    public static IIdempotencyBuilder UseSqliteStore(this IIdempotencyBuilder builder, string path, Action<SqliteIdempotencyStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);

        var options = new SqliteIdempotencyStoreOptions { Path = path };
        configure?.Invoke(options);
        SqliteIdempotencyStore.Validate(options);

        return builder.UseStore(sp => new SqliteIdempotencyStore(options, sp.GetService<TimeProvider>() ?? TimeProvider.System));
    }
}
