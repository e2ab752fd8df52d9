using System.Reflection;
using Microsoft.Extensions.DependencyInjection;

namespace Idem.Http.Tests;

public sealed class ApiTests
{
    [Fact]
    public void Public_types_are_sealed_or_static_and_the_handler_is_internal()
    {
        var assembly = typeof(IdempotencyKeyOptions).Assembly;
        var exported = assembly.GetExportedTypes();
        Assert.Equal(
            new[]
            {
                "Idem.Http.IdempotencyHttpMessageExtensions", "Idem.Http.IdempotencyKeyOptions", "Idem.Http.IdempotencyRequestOptions",
                "Microsoft.Extensions.DependencyInjection.IdempotencyHttpClientBuilderExtensions",
            },
            exported.Select(t => t.FullName).Order());
        Assert.All(exported, t => Assert.True(t.IsSealed, $"{t} is sealed or static"));
        Assert.False(typeof(IdempotencyKeyOptions).Assembly.GetType("Idem.Http.IdempotencyKeyHandler")!.IsPublic);
        Assert.Null(assembly.GetCustomAttributes<System.Runtime.CompilerServices.InternalsVisibleToAttribute>().FirstOrDefault());
        Assert.NotNull(typeof(IdempotencyHttpClientBuilderExtensions).GetMethod(nameof(IdempotencyHttpClientBuilderExtensions.AddIdempotencyKeys)));
    }
}
