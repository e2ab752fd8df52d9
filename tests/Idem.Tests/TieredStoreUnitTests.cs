using Idem.TestUtils;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace Idem.Tests;

/// <summary>The tiered store's cache handling on the fake clock: hits, failures, back-off, metrics.</summary>
public sealed class TieredStoreUnitTests : IDisposable
{
    private static readonly TimeSpan Day = TimeSpan.FromHours(24);
    private readonly Harness _h = new();

    public void Dispose() => _h.Dispose();

    [Fact]
    public async Task Hits_and_failures_are_counted_and_a_failure_skips_the_cache_for_the_backoff()
    {
        using var hits = new MetricCollector<long>(_h.MeterFactory, IdempotencyMetrics.MeterName, "idem.cache.hits");
        using var errors = new MetricCollector<long>(_h.MeterFactory, IdempotencyMetrics.MeterName, "idem.cache.errors");
        var cache = new DictionaryCache();
        var durable = new CountingStore(new InMemoryIdempotencyStore(_h.Time));
        var tiered = new TieredIdempotencyStore(durable, cache, new TieredIdempotencyStoreOptions { CacheBackoff = TimeSpan.FromSeconds(5) }, _h.Time, null, new IdempotencyMetrics(_h.MeterFactory));

        var owner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(new ClaimRequest("k", "fp", owner, TimeSpan.FromSeconds(10), Day), default)).Status);
        Assert.True(await tiered.CompleteAsync("k", owner, Tests.Response(201, "done"), Day, default));
        Assert.Equal(ClaimStatus.Completed, (await tiered.TryClaimAsync(new ClaimRequest("k", "fp", Guid.NewGuid(), TimeSpan.FromSeconds(10), Day), default)).Status);
        Assert.Equal(1, durable.Claims);
        Assert.Equal(1, hits.GetMeasurementSnapshot().EvaluateAsCounter());

        cache.Down = true;
        Assert.Equal(ClaimStatus.Completed, (await tiered.TryClaimAsync(new ClaimRequest("k", "fp", Guid.NewGuid(), TimeSpan.FromSeconds(10), Day), default)).Status);
        Assert.Equal(ClaimStatus.Completed, (await tiered.TryClaimAsync(new ClaimRequest("k", "fp", Guid.NewGuid(), TimeSpan.FromSeconds(10), Day), default)).Status);
        Assert.Equal(3, durable.Claims);
        Assert.Equal(1, cache.FailedCalls); // the second claim skipped the cache (back-off)
        Assert.Equal(1, errors.GetMeasurementSnapshot().EvaluateAsCounter());
        Assert.Equal("get", errors.LastMeasurement!.Tags["idem.operation"]);

        cache.Down = false;
        _h.Time.Advance(TimeSpan.FromSeconds(6));
        Assert.Equal(ClaimStatus.Completed, (await tiered.TryClaimAsync(new ClaimRequest("k", "fp", Guid.NewGuid(), TimeSpan.FromSeconds(10), Day), default)).Status);
        Assert.Equal(3, durable.Claims);
        Assert.Equal(2, tiered.CacheHits);
        Assert.Equal(1, tiered.CacheFailures);
    }

    [Fact]
    public async Task While_the_durable_store_is_down_cached_replays_are_served_and_new_keys_fail()
    {
        var durable = new CountingStore(new InMemoryIdempotencyStore(_h.Time));
        var tiered = new TieredIdempotencyStore(durable, new DictionaryCache(), timeProvider: _h.Time);
        var owner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await tiered.TryClaimAsync(new ClaimRequest("k", "fp", owner, TimeSpan.FromSeconds(10), Day), default)).Status);
        Assert.True(await tiered.CompleteAsync("k", owner, Tests.Response(201, "done"), Day, default));

        durable.FailWith = new InvalidOperationException("PostgreSQL is down");

        var replay = await tiered.TryClaimAsync(new ClaimRequest("k", "other-fp", Guid.NewGuid(), TimeSpan.FromSeconds(10), Day), default);
        Assert.Equal(ClaimStatus.Completed, replay.Status);
        Assert.Equal("fp", replay.Record!.Fingerprint); // the caller sees the mismatch, as with the durable store
        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
            await tiered.TryClaimAsync(new ClaimRequest("new", "fp", Guid.NewGuid(), TimeSpan.FromSeconds(10), Day), default));
    }

    private sealed class DictionaryCache : IIdempotencyResponseCache
    {
        private readonly Dictionary<string, IdempotencyRecord> _records = [];

        public bool Down { get; set; }

        public int FailedCalls { get; private set; }

        public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
        {
            ThrowIfDown();
            return ValueTask.FromResult(_records.GetValueOrDefault(key));
        }

        public ValueTask SetAsync(IdempotencyRecord completed, CancellationToken cancellationToken)
        {
            ThrowIfDown();
            _records[completed.Key] = completed;
            return ValueTask.CompletedTask;
        }

        private void ThrowIfDown()
        {
            if (Down)
            {
                FailedCalls++;
                throw new InvalidOperationException("down");
            }
        }
    }
}
