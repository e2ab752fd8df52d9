namespace Idem;

/// <summary>
/// An optional capability of a shared store, beside <see cref="IIdempotencyStore"/>: it tells every node when a record
/// is deleted before it expires (an operator's <see cref="IIdempotencyStoreAdmin.DeleteAsync"/>, for example
/// <c>idem keys purge KEY</c>, from any node or process), so that copies a node keeps in memory
/// (<see cref="LocalReplayCacheStore"/>) forget it instead of replaying it until its retention ends.
/// </summary>
/// <remarks>
/// Notifications travel through the store's own channel (PostgreSQL's <c>NOTIFY</c>, Redis's <c>PUBLISH</c>) and may
/// be lost while that channel is down; the store then says so through <c>missed</c> once the channel is back, and a
/// subscriber forgets everything it may have missed. Expiry needs no notification: every copy carries its record's
/// expiry.
/// </remarks>
public interface IIdempotencyDeletionNotifier
{
    /// <summary>
    /// Calls <paramref name="deleted"/> with the store key of each record deleted from now on, and
    /// <paramref name="missed"/> each time deletions may have gone unheard (the channel was established or restored),
    /// until the returned subscription is disposed. Both are called on the store's own threads and must return quickly
    /// and not throw.
    /// </summary>
    /// <param name="deleted">Called with a deleted record's store key.</param>
    /// <param name="missed">Called when deletions may have been missed.</param>
    /// <returns>The subscription; dispose it to stop.</returns>
    IDisposable SubscribeToDeletions(Action<string> deleted, Action missed);
}
