using System.Diagnostics.Metrics;

namespace Idem.TestUtils;

/// <summary>An <see cref="IMeterFactory"/> without a service provider, for executors built by hand; disposes its meters.</summary>
public sealed class TestMeterFactory : IMeterFactory
{
    private readonly List<Meter> _meters = [];

    public Meter Create(MeterOptions options)
    {
        var meter = new Meter(options);
        lock (_meters)
        {
            _meters.Add(meter);
        }

        return meter;
    }

    public void Dispose()
    {
        lock (_meters)
        {
            _meters.ForEach(m => m.Dispose());
        }
    }
}
