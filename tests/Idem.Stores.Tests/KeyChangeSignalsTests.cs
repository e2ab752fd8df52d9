using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Idem.Stores.Tests;

public sealed class KeyChangeSignalsTests
{
    private static readonly TimeSpan Liveness = TimeSpan.FromSeconds(10);
    private readonly FakeTimeProvider _time = new();
    private readonly KeyChangeSignals _signals = new();

    private static ValueTask<bool> Unchanged(CancellationToken cancellationToken) => ValueTask.FromResult(false);

    private static async Task Live(Task task)
    {
        Assert.Same(task, await Task.WhenAny(task, Task.Delay(Liveness)));
        await task;
    }

    [Fact]
    public async Task Signal_wakes_every_waiter_of_the_key_and_only_them()
    {
        var a1 = _signals.WaitAsync("a", Unchanged, TimeSpan.FromMinutes(1), _time, CancellationToken.None).AsTask();
        var a2 = _signals.WaitAsync("a", Unchanged, TimeSpan.FromMinutes(1), _time, CancellationToken.None).AsTask();
        var b = _signals.WaitAsync("b", Unchanged, TimeSpan.FromMinutes(1), _time, CancellationToken.None).AsTask();

        _signals.Signal("a");

        await Live(Task.WhenAll(a1, a2));
        Assert.False(b.IsCompleted);
        Assert.Equal(1, _signals.WaitingKeys);
        _signals.Signal("b");
        await Live(b);
        Assert.Equal(0, _signals.WaitingKeys);
    }

    [Fact]
    public async Task Changed_record_returns_without_waiting()
    {
        await Live(_signals.WaitAsync("a", _ => ValueTask.FromResult(true), Timeout.InfiniteTimeSpan, _time, CancellationToken.None).AsTask());
        Assert.Equal(0, _signals.WaitingKeys);
    }

    [Fact]
    public async Task Timed_out_and_cancelled_waits_leave_nothing_behind()
    {
        // A key whose change is never signalled here (another process completed it) must not stay registered.
        var timedOut = _signals.WaitAsync("a", Unchanged, TimeSpan.FromSeconds(1), _time, CancellationToken.None).AsTask();
        using var cts = new CancellationTokenSource();
        var cancelled = _signals.WaitAsync("b", Unchanged, TimeSpan.FromMinutes(1), _time, cts.Token).AsTask();
        Assert.Equal(2, _signals.WaitingKeys);

        _time.Advance(TimeSpan.FromSeconds(1));
        await Live(timedOut);
        await cts.CancelAsync();
        await Live(Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled));

        Assert.Equal(0, _signals.WaitingKeys);
    }

    [Fact]
    public async Task A_waiter_that_stays_keeps_the_key_registered_when_another_leaves()
    {
        var leaving = _signals.WaitAsync("a", Unchanged, TimeSpan.FromSeconds(1), _time, CancellationToken.None).AsTask();
        var staying = _signals.WaitAsync("a", Unchanged, TimeSpan.FromMinutes(10), _time, CancellationToken.None).AsTask();

        _time.Advance(TimeSpan.FromSeconds(1));
        await Live(leaving);
        Assert.Equal(1, _signals.WaitingKeys);

        _signals.Signal("a");
        await Live(staying);
        Assert.Equal(0, _signals.WaitingKeys);
    }

    [Fact]
    public async Task Many_concurrent_waits_and_signals_lose_no_wake_up()
    {
        // Each round: a waiter whose re-check sees the change only once the "store" has changed; the change and
        // its signal race the registration. The waiter must never sleep through to its (long) timeout.
        for (var round = 0; round < 2000; round++)
        {
            var changed = 0;
            var wait = Task.Run(() => _signals.WaitAsync(
                "k", _ => ValueTask.FromResult(Volatile.Read(ref changed) == 1), TimeSpan.FromMinutes(1), _time, CancellationToken.None).AsTask());
            var change = Task.Run(() =>
            {
                Volatile.Write(ref changed, 1);
                _signals.Signal("k");
            });
            await Live(Task.WhenAll(wait, change));
        }

        Assert.Equal(0, _signals.WaitingKeys);
    }
}
