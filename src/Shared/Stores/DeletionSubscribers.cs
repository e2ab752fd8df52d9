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

    /// <summary>
    /// A deletion's message on a store's change channel: this prefix, then the store key, beside the plain store keys
    /// that wake waiters. Store keys are hashes in hex; a key that began with it would only make waiters read again or a
    /// node forget a cached copy, both harmless.
    /// </summary>
    public const string MessagePrefix = "\u001Fdeleted:";

    /// <summary>Tells the subscribers of a deletion message and returns true; false for any other message.</summary>
    public bool TryDeliver(string message)
    {
        if (!message.StartsWith(MessagePrefix, StringComparison.Ordinal))
        {
            return false;
        }

        Deleted(message[MessagePrefix.Length..]);
        return true;
    }

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
