namespace Idem;

/// <summary>
/// A store that stands in front of another and changes no answer (the local replay cache; the tiered store in front of
/// its durable store). The executor finds the capabilities such a store does not offer itself, recovery points and
/// joined transactions, on the store beneath it, so that putting a cache in front never turns a feature off.
/// </summary>
internal interface IIdempotencyStoreDecorator
{
    /// <summary>The store beneath this one.</summary>
    IIdempotencyStore Inner { get; }

    /// <summary>
    /// A completion of <paramref name="key"/> by <paramref name="ownerToken"/> committed beneath this store, in a joined
    /// transaction that did not pass through it: whatever it keeps about that claim is stale.
    /// </summary>
    void OnCompletedBeneath(string key, Guid ownerToken);

    /// <summary>The first of <paramref name="store"/> and the stores beneath it that is a <typeparamref name="T"/>.</summary>
    static T? Find<T>(IIdempotencyStore store)
        where T : class
    {
        for (IIdempotencyStore? current = store; current is not null; current = (current as IIdempotencyStoreDecorator)?.Inner)
        {
            if (current is T found)
            {
                return found;
            }
        }

        return null;
    }

    /// <summary>Tells every decorator from <paramref name="store"/> down that a completion committed beneath it.</summary>
    static void CompletedBeneath(IIdempotencyStore store, string key, Guid ownerToken)
    {
        for (var current = store as IIdempotencyStoreDecorator; current is not null; current = current.Inner as IIdempotencyStoreDecorator)
        {
            current.OnCompletedBeneath(key, ownerToken);
        }
    }
}
