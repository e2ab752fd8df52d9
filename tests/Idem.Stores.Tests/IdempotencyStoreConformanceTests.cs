using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>
/// The contract every store must keep, run against the real store. A store package adds one subclass.
/// </summary>
public abstract class IdempotencyStoreConformanceTests : IAsyncLifetime
{
    private IIdempotencyStore? _store;

    /// <summary>The clock handed to stores that judge time by the app clock.</summary>
    protected FakeTimeProvider Time { get; } = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));

    /// <summary>
    /// <see langword="true"/> when the store judges leases and retention by the <see cref="TimeProvider"/> it is given;
    /// <see langword="false"/> when it uses its server's clock (then tests use short real durations).
    /// </summary>
    protected abstract bool UsesAppClock { get; }

    /// <summary>The store under test; created once per test with a fresh, empty key space.</summary>
    protected IIdempotencyStore Store => _store ?? throw new InvalidOperationException("Not initialized.");

    /// <summary>Creates a store with a fresh, empty key space (a new file, schema or key prefix).</summary>
    protected abstract ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider);

    /// <summary>Creates a second, independent store instance over the same data (a second node or process).</summary>
    protected abstract ValueTask<IIdempotencyStore> CreateSecondInstanceAsync(TimeProvider timeProvider);

    /// <summary>A lease short enough to expire within a test.</summary>
    protected TimeSpan ShortLease => UsesAppClock ? TimeSpan.FromSeconds(10) : TimeSpan.FromMilliseconds(400);

    /// <summary>Moves the store's clock forward by <paramref name="by"/>.</summary>
    protected async Task AdvanceAsync(TimeSpan by)
    {
        if (UsesAppClock)
        {
            Time.Advance(by);
        }
        else
        {
            await Task.Delay(by);
        }
    }

    public async Task InitializeAsync() => _store = await CreateStoreAsync(Time);

    public virtual async Task DisposeAsync()
    {
        if (_store is IAsyncDisposable asyncDisposable)
        {
            await asyncDisposable.DisposeAsync();
        }

        (_store as IDisposable)?.Dispose();
    }

    protected static string NewKey() => Guid.NewGuid().ToString("N");

    protected ClaimRequest Claim(string key, string fingerprint = "fp", Guid? owner = null, TimeSpan? lease = null) =>
        new(key, fingerprint, owner ?? Guid.NewGuid(), lease ?? ShortLease, TimeSpan.FromHours(24));

    [Fact]
    public async Task First_claim_of_a_key_is_claimed()
    {
        var result = await Store.TryClaimAsync(Claim(NewKey()), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, result.Status);
    }
}
