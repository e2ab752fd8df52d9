using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;

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

    [Fact]
    public async Task A_worker_container_purges_expired_records_in_batches_and_keeps_live_ones()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.Configure<IdempotencyPurgeOptions>(o => o.BatchSize = 7);
        services.AddIdempotencyCore().UseInMemoryStore();
        await using var provider = services.BuildServiceProvider();
        var store = provider.GetRequiredService<IIdempotencyStore>();
        var response = new StoredResponse(200, null, new byte[] { 1 });
        for (var i = 0; i < 20; i++)
        {
            var owner = Guid.NewGuid();
            await store.TryClaimAsync(new ClaimRequest($"old-{i}", "fp", owner, TimeSpan.FromSeconds(10), TimeSpan.FromMinutes(5)), default);
            await store.CompleteAsync($"old-{i}", owner, response, TimeSpan.FromMinutes(5), default);
        }

        var keeper = Guid.NewGuid();
        await store.TryClaimAsync(new ClaimRequest("live", "fp", keeper, TimeSpan.FromSeconds(10), TimeSpan.FromHours(24)), default);
        await store.CompleteAsync("live", keeper, response, TimeSpan.FromHours(24), default);

        // Before the purge moved to core, a host built on AddIdempotencyCore() had no hosted service at all.
        var purge = Assert.Single(provider.GetServices<IHostedService>().OfType<IdempotencyPurgeService>());
        await purge.StartAsync(default);
        time.Advance(TimeSpan.FromMinutes(6));
        await purge.PurgeOnceAsync(default); // 20 records in batches of 7: three store calls in one run
        await purge.StopAsync(default);

        Assert.Null(await store.GetAsync("old-0", default));
        Assert.Null(await store.GetAsync("old-19", default));
        Assert.NotNull(await store.GetAsync("live", default));
    }

    [Fact]
    public async Task A_worker_host_without_a_store_fails_when_its_hosted_services_are_created()
    {
        var services = new ServiceCollection();
        services.AddIdempotencyCore();
        await using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<InvalidOperationException>(() => provider.GetServices<IHostedService>().ToList());

        Assert.Contains(".UseSqliteStore()", ex.Message);
        Assert.Contains(".UseInMemoryStore()", ex.Message);
    }

    [Fact]
    public async Task Purge_options_out_of_range_are_refused()
    {
        var services = new ServiceCollection();
        services.Configure<IdempotencyPurgeOptions>(o => o.BatchSize = 0);
        services.AddIdempotencyCore().UseInMemoryStore();
        await using var provider = services.BuildServiceProvider();

        var ex = Assert.Throws<ArgumentOutOfRangeException>(
            () => provider.GetRequiredService<Microsoft.Extensions.Options.IOptions<IdempotencyPurgeOptions>>().Value);
        Assert.Contains("BatchSize", ex.Message);
    }
}
