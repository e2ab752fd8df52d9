using System.Net;

namespace Idem.Gateway.FunctionalTests;

/// <summary>
/// The store goes out of reach while a forward runs: the lease cannot be renewed, so Idem cancels the forward rather
/// than let it run without a claim. Found by the fault harness as an empty 500 during a PostgreSQL restart (seed
/// 1245377029): the store's failure must be answered like every other one, 503 with Retry-After as problem+json,
/// never a 5xx the client cannot tell from an upstream failure.
/// </summary>
public sealed class ClaimLostDuringForwardTests
{
    [Fact]
    public async Task A_forward_cancelled_because_the_lease_could_not_be_renewed_is_answered_503_with_Retry_After()
    {
        var store = new RenewalFailingStore(new InMemoryIdempotencyStore());
        await using var upstream = await CountingUpstream.StartAsync();
        // A 1 s lease (the shortest allowed) is renewed after 333 ms; the upstream takes 5 s, so the first renewal falls inside the forward.
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address, ["--Idem:Default:Lease", "00:00:01"], store);
        var key = Http.NewKey();

        store.FailRenewals = true;
        var lost = await gateway.Client.SendAsync(Http.Post("/orders?delayMs=5000", key));
        var problem = await lost.Content.ReadAsStringAsync();
        store.FailRenewals = false;
        var retry = await gateway.Client.SendAsync(Http.Post("/orders?delayMs=10", key));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, lost.StatusCode);
        Assert.NotNull(lost.Headers.RetryAfter);
        Assert.Equal("application/problem+json", lost.Content.Headers.ContentType?.MediaType);
        Assert.Contains("could not be kept", problem);
        Assert.True(store.FailedRenewals > 0);
        Assert.Equal(HttpStatusCode.Created, retry.StatusCode); // the claim was released: the retry runs it
        Assert.False(Http.Replayed(retry));
        Assert.Equal(1, upstream.Completed("orders")); // the cancelled forward never completed; the retry did
    }

    private sealed class RenewalFailingStore(IIdempotencyStore inner) : IIdempotencyStore
    {
        private int _failedRenewals;

        public volatile bool FailRenewals;

        public int FailedRenewals => Volatile.Read(ref _failedRenewals);

        public ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken) => inner.TryClaimAsync(request, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken) =>
            inner.CompleteAsync(key, ownerToken, response, retention, cancellationToken);

        public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken) => inner.ReleaseAsync(key, ownerToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken)
        {
            if (FailRenewals)
            {
                Interlocked.Increment(ref _failedRenewals);
                return ValueTask.FromException<bool>(new IOException("The idempotency store is unreachable (test)."));
            }

            return inner.RenewAsync(key, ownerToken, lease, cancellationToken);
        }

        public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken) => inner.GetAsync(key, cancellationToken);

        public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken) => inner.PurgeExpiredAsync(maxRecords, cancellationToken);

        public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) =>
            inner.WaitForChangeAsync(key, observedOwner, timeout, cancellationToken);
    }
}
