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
}
