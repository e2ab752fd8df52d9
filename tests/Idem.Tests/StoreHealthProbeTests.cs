namespace Idem.Tests;

public sealed class StoreHealthProbeTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_store_that_hangs_is_reported_unhealthy_at_the_deadline_and_one_that_honours_its_token_is_cancelled(bool honoursToken)
    {
        var store = new HangingReadStore(honoursToken);

        var health = await IdempotencyStoreHealth.ProbeAsync(store, TimeSpan.FromMilliseconds(100), CancellationToken.None).AsTask().WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(IdempotencyHealthStatus.Unhealthy, health.Status);
        var timeout = Assert.IsType<TimeoutException>(health.Exception);
        Assert.Contains("100 ms", timeout.Message, StringComparison.Ordinal);
        if (honoursToken)
        {
            // Its own cancellation callback may run just after the probe's wait ended.
            await store.Cancelled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }
        else
        {
            Assert.False(store.Cancelled.Task.IsCompleted);
        }
    }

    [Fact]
    public async Task The_callers_cancellation_surfaces()
    {
        var store = new HangingReadStore(honoursToken: true);
        using var caller = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await IdempotencyStoreHealth.ProbeAsync(store, TimeSpan.FromSeconds(10), caller.Token));
        await store.Cancelled.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>A store whose reads never answer (for 30 s); only <see cref="GetAsync"/> is used by the probe.</summary>
    private sealed class HangingReadStore(bool honoursToken) : IIdempotencyStore
    {
        public TaskCompletionSource Cancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken)
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(30), honoursToken ? cancellationToken : CancellationToken.None);
            }
            catch (OperationCanceledException)
            {
                Cancelled.TrySetResult();
                throw;
            }

            return null;
        }

        public ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) => throw new NotSupportedException();
    }
}
