using System.Diagnostics.CodeAnalysis;

namespace Idem;

/// <summary>
/// One deadline for a call to a cache or store that may or may not honour its token: the call gets <see cref="Token"/>
/// (cancelled at the deadline, on the given clock, or when the caller's token is), and <see cref="Bound{T}"/> ends the
/// wait on that same token, so a call that ignores it is still cut off there. One source and one timer: a linked source
/// with its own timer beside a timed <c>WaitAsync</c> lets the wait win and dispose the source before it is cancelled,
/// and a call that honours its token then runs on after the caller gave up on it.
/// </summary>
[SuppressMessage("Design", "CA1001", Justification = "It is disposable: CA1001 misreads structs that implement IDisposable (dotnet/roslyn-analyzers#6151, #7622).")]
internal readonly struct CallDeadline : IDisposable
{
    private readonly CancellationTokenSource _source;
    private readonly CancellationTokenRegistration _callerCancellation;

    public CallDeadline(TimeSpan timeout, TimeProvider timeProvider, CancellationToken callerToken)
    {
        _source = new CancellationTokenSource(timeout, timeProvider);
        _callerCancellation = callerToken.UnsafeRegister(static state => ((CancellationTokenSource)state!).Cancel(), _source);
    }

    /// <summary>The token to hand to the call.</summary>
    public CancellationToken Token => _source.Token;

    /// <summary>Whether the deadline (or the caller) has cancelled <see cref="Token"/>.</summary>
    public bool IsCancellationRequested => _source.IsCancellationRequested;

    /// <summary>
    /// <paramref name="pending"/>, or an <see cref="OperationCanceledException"/> once <see cref="Token"/> is cancelled
    /// (the caller's token tells which of the two it was).
    /// </summary>
    public ValueTask<T> Bound<T>(ValueTask<T> pending) =>
        pending.IsCompleted ? pending : new ValueTask<T>(pending.AsTask().WaitAsync(_source.Token));

    public void Dispose()
    {
        _callerCancellation.Dispose();
        _source.Dispose();
    }
}
