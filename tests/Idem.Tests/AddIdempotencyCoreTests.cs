using Microsoft.Extensions.DependencyInjection;

namespace Idem.Tests;

/// <summary>A worker without ASP.NET Core gets the executor from DI, and a container without a store says how to add one.</summary>
public sealed class AddIdempotencyCoreTests
{
    [Fact]
    public async Task A_worker_container_gets_an_executor_that_runs_each_key_once()
    {
        var services = new ServiceCollection();
        services.AddIdempotencyCore().UseInMemoryStore();
        await using var provider = services.BuildServiceProvider();
        var executor = provider.GetRequiredService<IdempotencyExecutor>();
        var runs = 0;

        var results = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
            await executor.ExecuteOnceAsync("send-invoice", "message-1", "message-1", _ => ValueTask.FromResult(Interlocked.Increment(ref runs))))));

        Assert.Equal(1, runs);
        Assert.All(results, r => Assert.Equal(1, r));
        Assert.Same(provider.GetRequiredService<IdempotencyMetrics>(), provider.GetRequiredService<IdempotencyMetrics>());
        Assert.Same(TimeProvider.System, provider.GetRequiredService<TimeProvider>());
    }

    [Fact]
    public async Task Without_a_store_resolving_the_executor_names_the_calls_that_choose_one()
    {
        var services = new ServiceCollection();
        services.AddIdempotencyCore();
        await using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<InvalidOperationException>(() => provider.GetRequiredService<IdempotencyExecutor>());

        Assert.Contains(".UseSqliteStore()", ex.Message);
        Assert.Contains(".UsePostgreSqlStore(", ex.Message);
        Assert.Contains(".UseRedisStore(", ex.Message);
        Assert.Contains(".UseInMemoryStore()", ex.Message);
    }
}
