using System.Collections.Concurrent;

namespace Idem;

/// <summary>
/// In-process wake-ups for callers waiting on a key, for store authors: a store signals a key when it completes
/// or releases it (or when its own notification channel says another process did), and waiters wake at once.
/// Only keys with waiters take memory; there is no global lock.
/// </summary>
public sealed class KeyChangeSignals
{
    private readonly ConcurrentDictionary<string, Waiters> _waiters = new(StringComparer.Ordinal);

    /// <summary>The number of keys with at least one waiter; for diagnostics and tests.</summary>
    public int WaitingKeys => _waiters.Count;

    /// <summary>Wakes everyone waiting on <paramref name="key"/>. Cheap when nobody waits.</summary>
    public void Signal(string key)
    {
        if (!_waiters.IsEmpty && _waiters.TryRemove(key, out var waiters))
        {
            waiters.Completion.TrySetResult();
        }
    }

    /// <summary>
    /// Waits for a signal on <paramref name="key"/>, <paramref name="timeout"/> or cancellation, after registering
    /// and then calling <paramref name="hasChanged"/>: a change that happened before registration is seen by that check.
    /// </summary>
    /// <param name="key">The key.</param>
    /// <param name="hasChanged">Re-reads the store; returns <see langword="true"/> when there is no need to wait.</param>
    /// <param name="timeout">The longest wait.</param>
    /// <param name="timeProvider">The clock for the timeout.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    public async ValueTask WaitAsync(
        string key,
        Func<CancellationToken, ValueTask<bool>> hasChanged,
        TimeSpan timeout,
        TimeProvider timeProvider,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(hasChanged);
        ArgumentNullException.ThrowIfNull(timeProvider);

        var waiters = Register(key);
        try
        {
            if (await hasChanged(cancellationToken).ConfigureAwait(false))
            {
                return;
            }

            try
            {
                await waiters.Completion.Task.WaitAsync(timeout, timeProvider, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // The caller re-checks the store; a timeout is the polling fallback, not an error. (Only the wait's own
                // timeout is caught: a store's timeout thrown by the re-check above surfaces.)
            }
        }
        finally
        {
            // The last waiter to leave removes the entry, so keys changed elsewhere (never signalled here) do not pile up.
            if (waiters.RemoveWaiter())
            {
                _waiters.TryRemove(new KeyValuePair<string, Waiters>(key, waiters));
            }
        }
    }

    private Waiters Register(string key)
    {
        while (true)
        {
            var waiters = _waiters.GetOrAdd(key, static _ => new Waiters());
            if (waiters.TryAddWaiter())
            {
                return waiters;
            }

            // Its last waiter is removing it; help, then register on a fresh entry.
            _waiters.TryRemove(new KeyValuePair<string, Waiters>(key, waiters));
        }
    }

    private sealed class Waiters
    {
        // The number of registered waiters; -1 once the last one left and the entry is being removed (closed for good).
        private int _count;

        public TaskCompletionSource Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool TryAddWaiter()
        {
            var count = Volatile.Read(ref _count);
            while (count >= 0)
            {
                var seen = Interlocked.CompareExchange(ref _count, count + 1, count);
                if (seen == count)
                {
                    return true;
                }

                count = seen;
            }

            return false;
        }

        /// <summary>Returns <see langword="true"/> when this was the last waiter and the entry is now closed.</summary>
        public bool RemoveWaiter() =>
            Interlocked.Decrement(ref _count) == 0 && Interlocked.CompareExchange(ref _count, -1, 0) == 0;
    }
}
