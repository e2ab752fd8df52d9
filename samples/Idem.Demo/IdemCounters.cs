using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Idem;

/// <summary>
/// The server's <c>idem.requests</c> counter by <c>idem.outcome</c>, read in process with a <see cref="MeterListener"/>
/// for the demo page and <c>GET /stats</c>. Only the <c>Idem</c> meter of this host's <see cref="IMeterFactory"/> is
/// counted (its <see cref="Meter.Scope"/>), so two hosts in one process (tests) do not count each other's requests.
/// </summary>
internal sealed class IdemCounters : IDisposable
{
    private const string RequestsInstrument = "idem.requests";

    // Every outcome is listed from the start, so /stats shows zeros rather than missing fields.
    private static readonly string[] Outcomes =
    [
        IdempotencyOutcomes.Executed, IdempotencyOutcomes.Replayed, IdempotencyOutcomes.Waited,
        IdempotencyOutcomes.Conflicted, IdempotencyOutcomes.Mismatched, IdempotencyOutcomes.Rejected,
        IdempotencyOutcomes.StoreError, IdempotencyOutcomes.Unprotected, IdempotencyOutcomes.NoKey,
    ];

    // One boxed counter per outcome: the hot path is a dictionary read and an Interlocked add, no lock.
    private readonly ConcurrentDictionary<string, StrongBox<long>> _counts = new(StringComparer.Ordinal);
    private readonly IMeterFactory _scope;
    private readonly MeterListener _listener = new();

    public IdemCounters(IMeterFactory meterFactory)
    {
        _scope = meterFactory;
        foreach (var outcome in Outcomes)
        {
            _counts[outcome] = new StrongBox<long>();
        }

        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == IdempotencyMetrics.MeterName
                && instrument.Name == RequestsInstrument
                && ReferenceEquals(instrument.Meter.Scope, _scope))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>(OnMeasurement);
    }

    /// <summary>Starts listening (instruments already created are published at once).</summary>
    public void Start() => _listener.Start();

    /// <summary>The counts so far, outcome → requests, in the order of <see cref="IdempotencyOutcomes"/>.</summary>
    public IReadOnlyDictionary<string, long> Snapshot()
    {
        var snapshot = new Dictionary<string, long>(_counts.Count, StringComparer.Ordinal);
        foreach (var outcome in Outcomes)
        {
            snapshot[outcome] = Interlocked.Read(ref _counts[outcome].Value);
        }

        foreach (var (outcome, count) in _counts)
        {
            snapshot.TryAdd(outcome, Interlocked.Read(ref count.Value)); // a value added after this demo was written
        }

        return snapshot;
    }

    public void Dispose() => _listener.Dispose();

    private void OnMeasurement(Instrument instrument, long measurement, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
    {
        foreach (var tag in tags)
        {
            if (tag.Key == IdempotencyMetrics.OutcomeTag && tag.Value is string outcome)
            {
                // The tag's values are a bounded set (IdempotencyOutcomes), so the dictionary stays small.
                var count = _counts.GetOrAdd(outcome, static _ => new StrongBox<long>());
                Interlocked.Add(ref count.Value, measurement);
                return;
            }
        }
    }
}
