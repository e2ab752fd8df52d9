// Shared source, compiled into Idem.PostgreSql and Idem.Redis as an internal type.
namespace Idem;

/// <summary>
/// The subscribers of one store's <see cref="IIdempotencyDeletionNotifier"/>: a copy-on-write array, so that telling
/// them takes no lock and a subscription never waits for a notification being delivered.
/// </summary>
internal sealed class DeletionSubscribers
{
    private readonly Lock _gate = new();
    private Subscription[] _subscriptions = [];

    /// <summary>Whether anyone listens (a store may skip work for nobody).</summary>
    public bool Any => Volatile.Read(ref _subscriptions).Length > 0;

    public IDisposable Add(Action<string> deleted, Action missed)
    {
        ArgumentNullException.ThrowIfNull(deleted);
        ArgumentNullException.ThrowIfNull(missed);
        var subscription = new Subscription(this, deleted, missed);
        lock (_gate)
        {
            _subscriptions = [.. _subscriptions, subscription];
        }

        return subscription;
    }

    public void Deleted(string key)
    {
        foreach (var subscription in Volatile.Read(ref _subscriptions))
        {
            subscription.Deleted(key);
        }
    }

    public void Missed()
    {
        foreach (var subscription in Volatile.Read(ref _subscriptions))
        {
            subscription.Missed();
        }
    }

    private void Remove(Subscription subscription)
    {
        lock (_gate)
        {
            _subscriptions = [.. _subscriptions.Where(s => s != subscription)];
        }
    }

    private sealed class Subscription(DeletionSubscribers owner, Action<string> deleted, Action missed) : IDisposable
    {
        public Action<string> Deleted { get; } = deleted;

        public Action Missed { get; } = missed;

        public void Dispose() => owner.Remove(this);
    }
}
