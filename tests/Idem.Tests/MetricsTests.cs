using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace Idem.Tests;

public sealed class MetricsTests : IDisposable
{
    private const string Fp = "fp";
    private readonly Harness _h = new();

    public void Dispose() => _h.Dispose();

    private static ValueTask<StoredResponse> Ok(IdempotentExecution _) => ValueTask.FromResult(Tests.Response(201, "ok"));

    private Task<IdempotencyOutcome> Run(string key, IdempotencyPolicy? policy = null, string fingerprint = Fp) =>
        _h.Executor.ExecuteAsync(key, fingerprint, policy ?? IdempotencyPolicy.Default, Ok, default).AsTask().WaitAsync(Tests.Guard);

    [Fact]
    public async Task Each_outcome_is_counted_once_with_its_tag()
    {
        using var requests = new MetricCollector<long>(_h.MeterFactory, IdempotencyMetrics.MeterName, "idem.requests");

        Assert.Equal(IdempotencyOutcomeKind.Executed, (await Run("k1")).Kind);
        Assert.Equal(IdempotencyOutcomeKind.Replayed, (await Run("k1")).Kind);
        Assert.Equal(IdempotencyOutcomeKind.FingerprintMismatch, (await Run("k1", fingerprint: "other")).Kind);

        // k2 is in flight under an owner outside this executor.
        var owner = Guid.NewGuid();
        await _h.Memory.TryClaimAsync(new ClaimRequest("k2", Fp, owner, TimeSpan.FromHours(1), TimeSpan.FromHours(2)), default);
        Assert.Equal(IdempotencyOutcomeKind.Conflict, (await Run("k2", IdempotencyPolicy.Default with { ConflictBehavior = ConflictBehavior.Reject })).Kind);

        var waiter = Run("k2");
        await _h.Time.WaitForTimerAsync(Tests.FirstPoll);
        Assert.True(await _h.Memory.CompleteAsync("k2", owner, Tests.Response(200, "by the owner"), TimeSpan.FromHours(1), default));
        var waited = await waiter.WaitAsync(Tests.Guard);
        Assert.True(waited.Waited);

        _h.Counting.FailWith = new InvalidOperationException("down");
        Assert.Equal(IdempotencyOutcomeKind.StoreUnavailable, (await Run("k3")).Kind);
        Assert.Equal(IdempotencyOutcomeKind.ExecutedUnprotected, (await Run("k3", IdempotencyPolicy.Default with { StoreFailureMode = StoreFailureMode.FailOpen })).Kind);

        var measurements = requests.GetMeasurementSnapshot();
        Assert.All(measurements, m => Assert.Equal(1, m.Value));
        var byOutcome = measurements
            .GroupBy(m => (string)m.Tags[IdempotencyMetrics.OutcomeTag]!)
            .ToDictionary(g => g.Key, g => g.Sum(m => m.Value));

        var expected = new Dictionary<string, long>
        {
            [IdempotencyOutcomes.Executed] = 1,
            [IdempotencyOutcomes.Replayed] = 1,
            [IdempotencyOutcomes.Mismatched] = 1,
            [IdempotencyOutcomes.Conflicted] = 1,
            [IdempotencyOutcomes.Waited] = 1,
            [IdempotencyOutcomes.StoreError] = 1,
            [IdempotencyOutcomes.Unprotected] = 1,
        };
        Assert.Equal(expected.OrderBy(p => p.Key), byOutcome.OrderBy(p => p.Key));

        // Keys never become tags.
        Assert.All(measurements, m => Assert.Equal([IdempotencyMetrics.OutcomeTag], m.Tags.Keys));
    }

    [Fact]
    public async Task Store_errors_are_counted_by_operation()
    {
        using var errors = new MetricCollector<long>(_h.MeterFactory, IdempotencyMetrics.MeterName, "idem.store.errors");
        _h.Counting.FailWith = new TimeoutException();

        await Run("k1");

        var measurement = Assert.Single(errors.GetMeasurementSnapshot());
        Assert.Equal("claim", measurement.Tags["idem.operation"]);
    }
}
