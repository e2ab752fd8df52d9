using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace Idem.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TracingGroup
{
    // An ActivityListener sees every test's activities (and makes them store a trace context): run these alone.
    public const string Name = "Tracing (alone: the listener is process-wide)";
}

[Collection(TracingGroup.Name)]
public sealed class TracingTests : IDisposable
{
    private readonly Harness _h = new();
    private readonly ActivityListener _listener;
    private readonly ConcurrentQueue<Activity> _stopped = new();

    public TracingTests()
    {
        _listener = new ActivityListener
        {
            ShouldListenTo = static s => s.Name == IdempotencyDiagnostics.ActivitySourceName,
            Sample = static (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = _stopped.Enqueue,
        };
        ActivitySource.AddActivityListener(_listener);
    }

    public void Dispose()
    {
        _listener.Dispose();
        _h.Dispose();
    }

    private static StoredResponse Created() =>
        new(201, [new("Content-Type", "application/json"), new("Location", "/orders/7")], Encoding.UTF8.GetBytes("{\"id\":7}"));

    private Task<IdempotencyOutcome> Run(string key, IdempotencyPolicy? policy = null) =>
        _h.Executor.ExecuteAsync(key, "fp", policy ?? IdempotencyPolicy.Default, _ => ValueTask.FromResult(Created()), default).AsTask().WaitAsync(Tests.Guard);

    private Activity[] ActivitiesOf(string key) => _stopped.Where(a => (string?)a.GetTagItem("idem.key") == key).ToArray();

    [Fact]
    public async Task A_replay_links_to_the_activity_that_executed_the_original_and_replays_the_same_headers()
    {
        var executed = await Run("k-link");
        var replayed = await Run("k-link");

        Assert.Equal(IdempotencyOutcomeKind.Replayed, replayed.Kind);
        Assert.Equal(executed.Response!.Headers.ToArray(), replayed.Response!.Headers.ToArray());
        Assert.Equal(executed.Response.Body.ToArray(), replayed.Response.Body.ToArray());

        var activities = ActivitiesOf("k-link");
        Assert.Equal(2, activities.Length);
        var (original, replay) = (activities[0], activities[1]);
        Assert.Equal("executed", original.GetTagItem(IdempotencyMetrics.OutcomeTag));
        Assert.Equal("replayed", replay.GetTagItem(IdempotencyMetrics.OutcomeTag));
        Assert.NotEqual(original.TraceId, replay.TraceId);
        var link = Assert.Single(replay.Links);
        Assert.Equal(original.TraceId, link.Context.TraceId);
        Assert.Equal(original.SpanId, link.Context.SpanId);
        Assert.Equal(original.TraceId.ToHexString(), replay.GetTagItem("idem.origin.trace_id"));

        // The trace context rides with the record, as its last stored header, and nowhere else.
        var stored = (await _h.Memory.GetAsync("k-link", default))!.Response!;
        Assert.Equal(IdempotencyDiagnostics.OriginTraceHeaderName, stored.Headers[^1].Key);
        Assert.Equal($"00-{original.TraceId.ToHexString()}-{original.SpanId.ToHexString()}-01", stored.Headers[^1].Value);
        Assert.DoesNotContain(replayed.Response.Headers, h => h.Key == IdempotencyDiagnostics.OriginTraceHeaderName);
    }

    [Fact]
    public async Task A_record_stored_without_a_trace_context_still_replays_byte_for_byte_without_a_link()
    {
        // As written before replays linked to their original (or by a node that does not trace): no trace header.
        var owner = Guid.NewGuid();
        await _h.Memory.TryClaimAsync(new ClaimRequest("k-old", "fp", owner, TimeSpan.FromMinutes(1), TimeSpan.FromHours(1)), default);
        Assert.True(await _h.Memory.CompleteAsync("k-old", owner, Created(), TimeSpan.FromHours(1), default));

        var replayed = await Run("k-old");

        Assert.Equal(IdempotencyOutcomeKind.Replayed, replayed.Kind);
        Assert.Equal(Created().Headers.ToArray(), replayed.Response!.Headers.ToArray()); // the last real header is kept
        Assert.Equal(Created().Body.ToArray(), replayed.Response.Body.ToArray());
        Assert.Empty(Assert.Single(ActivitiesOf("k-old")).Links);
    }

    [Fact]
    public async Task A_replay_of_a_response_too_large_to_keep_is_counted_as_not_retained()
    {
        using var notRetained = new MetricCollector<long>(_h.MeterFactory, IdempotencyMetrics.MeterName, "idem.replays.not_retained");
        var policy = IdempotencyPolicy.Default with { MaxStoredBodyBytes = 1 };

        Assert.Equal(IdempotencyOutcomeKind.Executed, (await Run("k-big", policy)).Kind);
        Assert.Empty(notRetained.GetMeasurementSnapshot());
        var replayed = await Run("k-big", policy);

        Assert.True(replayed.Response!.BodyOmitted);
        Assert.Equal(1, notRetained.GetMeasurementSnapshot().Sum(m => m.Value));
        Assert.Single(Assert.Single(ActivitiesOf("k-big"), a => (string?)a.GetTagItem(IdempotencyMetrics.OutcomeTag) == "replayed").Links);
    }
}
