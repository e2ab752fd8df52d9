using System.Diagnostics.Metrics;
using Idem.TestUtils;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Time.Testing;

namespace Idem.Tests;

/// <summary>Issue 20, item 2: recovery points on the in-memory store, through the executor.</summary>
public sealed class RecoveryPointTests : IDisposable
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();
    private readonly InMemoryIdempotencyStore _store;
    private readonly IdempotencyExecutor _executor;

    public RecoveryPointTests()
    {
        _store = new InMemoryIdempotencyStore(_time);
        _executor = new IdempotencyExecutor(_store, new IdempotencyMetrics(_services.GetRequiredService<IMeterFactory>()), _time);
    }

    public void Dispose() => _services.Dispose();

    [Fact]
    public async Task A_retry_after_a_failure_skips_the_finished_phase_and_gets_its_recorded_result()
    {
        using var phases = new MetricCollector<long>(_services.GetRequiredService<IMeterFactory>(), IdempotencyMetrics.MeterName, "idem.phases");
        var charges = new List<string>();
        var shipped = 0;
        var failShipping = true;
        async ValueTask<string> Work(IdempotentExecution execution)
        {
            var charge = await execution.RunPhaseAsync("charge", phase =>
            {
                charges.Add(phase.IdempotencyKey);
                return ValueTask.FromResult("ch_" + charges.Count);
            });
            await execution.RunPhaseAsync("ship", _ =>
            {
                if (failShipping)
                {
                    throw new InvalidOperationException("the carrier is down");
                }

                return ValueTask.FromResult(++shipped);
            });
            return charge;
        }

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await _executor.ExecuteOnceAsync("orders", "o-1", "fp", Work));
        failShipping = false;
        var result = await _executor.ExecuteOnceAsync("orders", "o-1", "fp", Work);

        Assert.Equal("ch_1", result); // the recorded result of the first owner's charge
        Assert.Single(charges);
        Assert.Equal(1, shipped);
        Assert.Equal(2, phases.GetMeasurementSnapshot().Count(m => Equals(m.Tags[IdempotencyMetrics.OutcomeTag], "recorded")));
        Assert.Single(phases.GetMeasurementSnapshot(), m => Equals(m.Tags[IdempotencyMetrics.OutcomeTag], "resumed"));

        // Replayed afterwards, with no phase run again.
        Assert.Equal("ch_1", await _executor.ExecuteOnceAsync("orders", "o-1", "fp", Work));
        Assert.Single(charges);
    }

    [Fact]
    public async Task Without_recovery_points_the_retry_runs_the_finished_step_again()
    {
        // The naive variant of the test above: the same two steps as plain code. The failure releases the key and the
        // retry charges again.
        var charges = 0;
        var failShipping = true;
        async ValueTask<int> Work(IdempotentExecution execution)
        {
            var charge = ++charges;
            if (failShipping)
            {
                throw new InvalidOperationException("the carrier is down");
            }

            return await ValueTask.FromResult(charge);
        }

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await _executor.ExecuteOnceAsync("orders", "o-2", "fp", Work));
        failShipping = false;
        await _executor.ExecuteOnceAsync("orders", "o-2", "fp", Work);
        Assert.Equal(2, charges);
    }

    [Fact]
    public async Task Phase_keys_are_stable_per_key_and_phase_and_differ_between_them()
    {
        var seen = new List<string>();
        ValueTask<int> Work(IdempotentExecution e)
        {
            seen.Add(e.GetPhaseKey("charge"));
            seen.Add(e.GetPhaseKey("ship"));
            return ValueTask.FromResult(1);
        }

        await _executor.ExecuteOnceAsync("orders", "a", "fp", Work);
        await _executor.ExecuteOnceAsync("orders", "b", "fp", Work);
        var storeKey = IdempotencyScope.ComputeStoreKey(string.Empty, "orders", "a");
        Assert.Equal(4, seen.Distinct().Count());
        Assert.All(seen, k => Assert.Equal(64, k.Length));
        Assert.Equal(seen[0], new IdempotentExecutionProbe(storeKey).PhaseKey("charge"));
    }

    [Fact]
    public async Task A_stale_owner_that_records_a_phase_after_a_takeover_is_refused_and_answered_as_a_duplicate()
    {
        var policy = IdempotencyPolicy.Default with { Lease = TimeSpan.FromSeconds(1) };
        var storeKey = IdempotencyScope.ComputeStoreKey(string.Empty, "orders", "stale");
        var inPhase = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var resume = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var staleRan = 0;
        var stale = _executor.ExecuteAsync(storeKey, "fp", policy, async execution =>
        {
            await execution.RunPhaseAsync("charge", async _ =>
            {
                Interlocked.Increment(ref staleRan);
                inPhase.SetResult();
                await resume.Task;
                return 1;
            });
            return new StoredResponse(200, null, "stale"u8.ToArray());
        }, CancellationToken.None).AsTask();

        await inPhase.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // The owner's lease runs out (its renewals are lost), and a retry takes the key over and completes it.
        var stolen = await _store.TryClaimAsync(new ClaimRequest(storeKey, "fp", Guid.NewGuid(), policy.Lease, policy.Retention), default);
        Assert.Equal(ClaimStatus.InFlight, stolen.Status);
        await _store.ReleaseAsync(storeKey, stolen.Record!.OwnerToken, default); // as if its lease had ended
        var winner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await _store.TryClaimAsync(new ClaimRequest(storeKey, "fp", winner, policy.Lease, policy.Retention), default)).Status);
        Assert.True(await _store.CompleteAsync(storeKey, winner, new StoredResponse(200, null, "winner"u8.ToArray()), policy.Retention, default));

        resume.SetResult();
        var outcome = await stale.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(IdempotencyOutcomeKind.Replayed, outcome.Kind);
        Assert.Equal("winner", System.Text.Encoding.UTF8.GetString(outcome.Response!.Body.Span));
        Assert.Equal(1, staleRan);
    }

    [Fact]
    public async Task A_store_without_recovery_points_fails_clearly()
    {
        var executor = new IdempotencyExecutor(new CountingStore(_store), new IdempotencyMetrics(_services.GetRequiredService<IMeterFactory>()), _time);
        var error = await Assert.ThrowsAsync<NotSupportedException>(async () =>
            await executor.ExecuteOnceAsync("orders", "x", "fp", e => e.RunPhaseAsync("p", _ => ValueTask.FromResult(1))));
        Assert.Contains("records no recovery points", error.Message, StringComparison.Ordinal);
    }

    /// <summary>Computes a phase key the way an execution of <c>storeKey</c> does, for comparison.</summary>
    private sealed class IdempotentExecutionProbe(string storeKey)
    {
        public string PhaseKey(string phase)
        {
            var hash = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(storeKey + "\n" + phase));
            return Convert.ToHexStringLower(hash);
        }
    }
}
