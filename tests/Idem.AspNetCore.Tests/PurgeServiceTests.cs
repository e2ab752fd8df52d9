using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Idem.AspNetCore.Tests;

public sealed class PurgeServiceTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("idem-purge-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task The_background_purge_deletes_expired_sqlite_records_in_batches_and_keeps_live_ones()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton<TimeProvider>(time);
        services.AddIdempotency(o => o.PurgeInterval = TimeSpan.FromMinutes(1)).UseSqliteStore(Path.Combine(_directory, "purge.db"));
        await using var provider = services.BuildServiceProvider();
        var store = provider.GetRequiredService<IIdempotencyStore>();
        var response = new StoredResponse(200, null, new byte[] { 1 });

        // 1200 short-lived records (more than two purge batches) and one long-lived record.
        for (var i = 0; i < 1200; i++)
        {
            var owner = Guid.NewGuid();
            await store.TryClaimAsync(new ClaimRequest($"old-{i}", "fp", owner, TimeSpan.FromSeconds(10), TimeSpan.FromMinutes(5)), default);
            await store.CompleteAsync($"old-{i}", owner, response, TimeSpan.FromMinutes(5), default);
        }

        var keeper = Guid.NewGuid();
        await store.TryClaimAsync(new ClaimRequest("live", "fp", keeper, TimeSpan.FromSeconds(10), TimeSpan.FromHours(24)), default);
        await store.CompleteAsync("live", keeper, response, TimeSpan.FromHours(24), default);

        var purge = provider.GetServices<IHostedService>().OfType<Idem.IdempotencyPurgeService>().Single();
        await purge.StartAsync(default);
        time.Advance(TimeSpan.FromMinutes(6)); // past the short retention, and fires the purge timer
        await purge.PurgeOnceAsync(default); // deterministic: the timer's own run may still be in progress
        await purge.StopAsync(default);

        Assert.Equal(0, await store.PurgeExpiredAsync(10, default));
        Assert.Null(await store.GetAsync("old-0", default));
        Assert.Null(await store.GetAsync("old-1199", default));
        Assert.NotNull(await store.GetAsync("live", default));
    }

    [Fact]
    public async Task PurgeInterval_of_the_middleware_options_sets_the_core_purge()
    {
        var services = new ServiceCollection();
        services.AddIdempotency(o => o.PurgeInterval = TimeSpan.FromSeconds(42)).UseInMemoryStore();
        await using var provider = services.BuildServiceProvider();

        var purge = provider.GetRequiredService<Microsoft.Extensions.Options.IOptions<IdempotencyPurgeOptions>>().Value;

        Assert.Equal(TimeSpan.FromSeconds(42), purge.Interval);
        Assert.Single(provider.GetServices<IHostedService>().OfType<Idem.IdempotencyPurgeService>());
    }
}
