using System.Collections.Concurrent;
using System.Text;
using Idem.TestUtils;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using System.Diagnostics.Metrics;

namespace Idem.Tests;

/// <summary>
/// A fake clock that also reports each timer created on it (by due time), so a test can wait until a background
/// loop has parked on its next delay before advancing the clock, instead of sleeping.
/// </summary>
internal sealed class ObservedTimeProvider : TimeProvider
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);
    private readonly ConcurrentDictionary<TimeSpan, SemaphoreSlim> _created = new();

    public FakeTimeProvider Fake { get; } = new();

    public override DateTimeOffset GetUtcNow() => Fake.GetUtcNow();

    public override long GetTimestamp() => Fake.GetTimestamp();

    public override long TimestampFrequency => Fake.TimestampFrequency;

    public override TimeZoneInfo LocalTimeZone => Fake.LocalTimeZone;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = Fake.CreateTimer(callback, state, dueTime, period);
        Created(dueTime).Release();
        return new ObservedTimer(timer, this);
    }

    // Re-arming a timer (ITimer.Change) counts like creating one: both park a loop on its next delay.
    private sealed class ObservedTimer(ITimer inner, ObservedTimeProvider owner) : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            var changed = inner.Change(dueTime, period);
            if (dueTime != Timeout.InfiniteTimeSpan)
            {
                owner.Created(dueTime).Release();
            }

            return changed;
        }

        public void Dispose() => inner.Dispose();

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    public void Advance(TimeSpan delta) => Fake.Advance(delta);

    /// <summary>Waits until one more timer with <paramref name="dueTime"/> has been created or re-armed (each counted once).</summary>
    public async Task WaitForTimerAsync(TimeSpan dueTime)
    {
        if (!await Created(dueTime).WaitAsync(Guard))
        {
            throw new TimeoutException($"No timer of {dueTime} was created within {Guard} (real time).");
        }
    }

    private SemaphoreSlim Created(TimeSpan dueTime) => _created.GetOrAdd(dueTime, static _ => new SemaphoreSlim(0));
}

/// <summary>A store wrapper whose claim, renewal and completion can be replaced.</summary>
internal sealed class HookStore(IIdempotencyStore inner) : IIdempotencyStore
{
    public Func<ClaimRequest, CancellationToken, ValueTask<ClaimResult>>? OnClaim { get; set; }

    public Func<string, Guid, TimeSpan, CancellationToken, ValueTask<bool>>? OnRenew { get; set; }

    /// <summary>Runs before each completion; it may throw to play an unreachable store.</summary>
    public Action<string, Guid>? BeforeComplete { get; set; }

    public ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken) =>
        OnClaim is { } hook ? hook(request, cancellationToken) : inner.TryClaimAsync(request, cancellationToken);

    public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        BeforeComplete?.Invoke(key, ownerToken);
        return inner.CompleteAsync(key, ownerToken, response, retention, cancellationToken);
    }

    public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken) =>
        inner.ReleaseAsync(key, ownerToken, cancellationToken);

    public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken) =>
        OnRenew is { } hook ? hook(key, ownerToken, lease, cancellationToken) : inner.RenewAsync(key, ownerToken, lease, cancellationToken);

    public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken) => inner.GetAsync(key, cancellationToken);

    public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken) => inner.PurgeExpiredAsync(maxRecords, cancellationToken);

    public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) =>
        inner.WaitForChangeAsync(key, observedOwner, timeout, cancellationToken);
}

/// <summary>An executor over an in-memory store on a fake clock, with call counting and hooks.</summary>
internal sealed class Harness : IDisposable
{
    private readonly ServiceProvider _services;

    public Harness()
    {
        Time = new ObservedTimeProvider();
        Memory = new InMemoryIdempotencyStore(Time);
        Counting = new CountingStore(Memory);
        Hooks = new HookStore(Counting);
        _services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        MeterFactory = _services.GetRequiredService<IMeterFactory>();
        Executor = new IdempotencyExecutor(Hooks, new IdempotencyMetrics(MeterFactory), Time);
    }

    public ObservedTimeProvider Time { get; }

    public InMemoryIdempotencyStore Memory { get; }

    public CountingStore Counting { get; }

    public HookStore Hooks { get; }

    public IMeterFactory MeterFactory { get; }

    public IdempotencyExecutor Executor { get; }

    public void Dispose() => _services.Dispose();
}

internal static class Tests
{
    /// <summary>A real-time bound on awaiting something the test has already caused; never a sleep.</summary>
    public static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    /// <summary>The executor's first poll interval while waiting on an in-flight owner.</summary>
    public static readonly TimeSpan FirstPoll = TimeSpan.FromMilliseconds(50);

    public static StoredResponse Response(int status, string body) => new(status, [new("Content-Type", "text/plain")], Encoding.UTF8.GetBytes(body));

    public static Task<T> Guarded<T>(this ValueTask<T> task) => task.AsTask().WaitAsync(Guard);

    public static string Text(this IdempotencyOutcome outcome) => Encoding.UTF8.GetString(outcome.Response!.Body.Span);
}
