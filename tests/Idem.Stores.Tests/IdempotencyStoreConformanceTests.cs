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

    /// <summary>
    /// <see langword="true"/> when the store deletes records past retention by itself (Redis key TTLs): its purge then
    /// finds nothing, and the purge test checks that the expired records are gone without one.
    /// </summary>
    protected virtual bool ExpiresRecordsItself => false;

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

    // ---- private helpers (private so a store's subclass can never collide with them) ----

    /// <summary>How long a liveness check waits before declaring a hang; far above any honest latency.</summary>
    private static readonly TimeSpan Liveness = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A retention short enough to run out within a test. On a real clock it must also outlast the reads that check
    /// the record is still there (400 ms did not, on a busy box, in a clean-clone run).
    /// </summary>
    private TimeSpan ShortRetention => UsesAppClock ? TimeSpan.FromMinutes(1) : TimeSpan.FromSeconds(2);

    /// <summary>How long a storm of claims may take before it counts as hung (a round trip each, on a busy machine).</summary>
    private static readonly TimeSpan StormLiveness = TimeSpan.FromSeconds(60);

    private static async Task<T> Live<T>(Task<T> task, string what, TimeSpan? bound = null)
    {
        var limit = bound ?? Liveness;
        var winner = await Task.WhenAny(task, Task.Delay(limit));
        Assert.True(ReferenceEquals(winner, task), $"{what} did not finish within {limit.TotalSeconds} s.");
        return await task;
    }

    private static async Task Live(Task task, string what)
    {
        var winner = await Task.WhenAny(task, Task.Delay(Liveness));
        Assert.True(ReferenceEquals(winner, task), $"{what} did not finish within {Liveness.TotalSeconds} s.");
        await task;
    }

    /// <summary>Advances the store's clock in steps until <paramref name="task"/> finishes (or the liveness bound).</summary>
    private async Task AdvanceUntilDoneAsync(Task task, TimeSpan step)
    {
        var started = TimeProvider.System.GetTimestamp();
        while (!task.IsCompleted && TimeProvider.System.GetElapsedTime(started) < Liveness)
        {
            await AdvanceAsync(step);
            await Task.WhenAny(task, Task.Delay(20));
        }
    }

    private static StoredResponse SampleResponse()
    {
        var body = new byte[256 + 6];
        for (var i = 0; i < 256; i++)
        {
            body[i] = (byte)i;
        }

        // Invalid UTF-8: a lone continuation byte, an overlong encoding, a truncated sequence, 0xFF 0xFE.
        new byte[] { 0x80, 0xC0, 0xAF, 0xE2, 0x82, 0xFF }.CopyTo(body, 256);
        return new StoredResponse(
            201,
            [
                new("Content-Type", "application/octet-stream"),
                new("Location", "/orders/42?x=1&y=%20"),
                new("Vary", "Accept"),
                new("X-Empty", ""),
                new("Vary", "Accept-Encoding"),
                new("Content-Language", "de-CH, ü"),
            ],
            body);
    }

    private static void AssertSameResponse(StoredResponse expected, StoredResponse? actual)
    {
        Assert.NotNull(actual);
        Assert.Equal(expected.StatusCode, actual.StatusCode);
        Assert.Equal(expected.Headers.ToArray(), actual.Headers.ToArray());
        Assert.Equal(expected.Body.ToArray(), actual.Body.ToArray());
        Assert.Equal(expected.BodyOmitted, actual.BodyOmitted);
    }

    private async Task<Guid> ClaimOwnedAsync(string key, string fingerprint = "fp", TimeSpan? lease = null)
    {
        var owner = Guid.NewGuid();
        var result = await Store.TryClaimAsync(Claim(key, fingerprint, owner, lease), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, result.Status);
        return owner;
    }

    // ---- claim ----

    [Fact]
    public async Task First_claim_of_a_key_is_claimed()
    {
        var result = await Store.TryClaimAsync(Claim(NewKey()), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, result.Status);
        Assert.False(result.TookOver);
    }

    [Fact]
    public async Task Second_claim_of_a_live_key_is_in_flight_with_the_first_owner()
    {
        var key = NewKey();
        // A lease no pause of a loaded CI box outlasts: with the short lease the store's real clock could expire the
        // claim between the two calls (seen once on the Redis Cluster), and the second call would rightly take over.
        var owner = await ClaimOwnedAsync(key, lease: TimeSpan.FromMinutes(1));

        var second = await Store.TryClaimAsync(Claim(key), CancellationToken.None);

        Assert.Equal(ClaimStatus.InFlight, second.Status);
        Assert.NotNull(second.Record);
        Assert.Equal(owner, second.Record.OwnerToken);
        Assert.Equal(IdempotencyRecordState.InFlight, second.Record.State);
        Assert.Equal("fp", second.Record.Fingerprint);
    }

    [Fact]
    public async Task Parallel_claims_of_one_key_across_instances_yield_exactly_one_owner()
    {
        const int Claimers = 256;
        var second = await CreateSecondInstanceAsync(Time);
        try
        {
            var key = NewKey();
            var ready = 0;
            var allReady = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var tasks = new Task<(Guid Owner, ClaimResult Result)>[Claimers];
            for (var i = 0; i < Claimers; i++)
            {
                var store = i % 2 == 0 ? Store : second;
                tasks[i] = Task.Run(async () =>
                {
                    var request = Claim(key, owner: Guid.NewGuid(), lease: TimeSpan.FromMinutes(5));
                    if (Interlocked.Increment(ref ready) == Claimers)
                    {
                        allReady.TrySetResult();
                    }

                    await go.Task;
                    return (request.OwnerToken, await store.TryClaimAsync(request, CancellationToken.None));
                });
            }

            await Live(allReady.Task, "Starting the claimers");
            go.SetResult();
            var results = await Live(Task.WhenAll(tasks), "256 parallel claims", StormLiveness);

            var winners = results.Where(r => r.Result.Status == ClaimStatus.Claimed).ToArray();
            var winner = Assert.Single(winners);
            Assert.False(winner.Result.TookOver);
            Assert.All(
                results.Where(r => r.Result.Status != ClaimStatus.Claimed),
                r =>
                {
                    Assert.Equal(ClaimStatus.InFlight, r.Result.Status);
                    Assert.Equal(winner.Owner, r.Result.Record!.OwnerToken);
                });

            var stored = await Store.GetAsync(key, CancellationToken.None);
            Assert.Equal(winner.Owner, stored!.OwnerToken);
        }
        finally
        {
            await DisposeIfNotSameAsync(second);
        }
    }

    [Fact]
    public async Task Parallel_claimers_walking_the_same_keys_yield_exactly_one_owner_per_key()
    {
        // Claimers on dedicated threads walk the same keys in the same order and meet at a barrier before each key, so
        // every key's first claims really collide: a check-then-insert race gets a thousand chances here, not the one
        // of a single-key storm. (Blocking on the claim is fine on these threads; they are not the thread pool's.)
        const int Claimers = 4;
        const int Keys = 1000;
        var second = await CreateSecondInstanceAsync(Time);
        try
        {
            var keys = Enumerable.Range(0, Keys).Select(_ => NewKey()).ToArray();
            using var barrier = new Barrier(Claimers);
            var tasks = Enumerable.Range(0, Claimers).Select(i => Task.Factory.StartNew(
                () =>
                {
                    var store = i % 2 == 0 ? Store : second;
                    var won = new List<string>();
                    foreach (var key in keys)
                    {
                        barrier.SignalAndWait();
                        try
                        {
                            var result = store.TryClaimAsync(Claim(key, lease: TimeSpan.FromMinutes(5)), CancellationToken.None).AsTask().GetAwaiter().GetResult();
                            if (result.Status != ClaimStatus.InFlight)
                            {
                                won.Add($"{key} {result.Status}");
                            }
                        }
                        catch (Exception ex)
                        {
                            // Recorded, not thrown: a claimer that left would strand the others at the barrier.
                            won.Add($"{key} {ex.GetType().Name}: {ex.Message}");
                        }
                    }

                    return won;
                },
                CancellationToken.None,
                TaskCreationOptions.LongRunning,
                TaskScheduler.Default)).ToArray();

            var won = (await Live(Task.WhenAll(tasks), "Parallel claims over many keys", StormLiveness)).SelectMany(w => w).ToArray();

            Assert.Equal(keys.Select(k => $"{k} {ClaimStatus.Claimed}").Order(), won.Order());
        }
        finally
        {
            await DisposeIfNotSameAsync(second);
        }
    }

    // ---- complete and replay ----

    [Fact]
    public async Task Completed_key_replays_the_response_byte_for_byte()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key);
        var response = SampleResponse();

        Assert.True(await Store.CompleteAsync(key, owner, response, TimeSpan.FromHours(24), CancellationToken.None));

        var claim = await Store.TryClaimAsync(Claim(key), CancellationToken.None);
        Assert.Equal(ClaimStatus.Completed, claim.Status);
        Assert.Equal(IdempotencyRecordState.Completed, claim.Record!.State);
        Assert.Equal(owner, claim.Record.OwnerToken);
        Assert.Equal("fp", claim.Record.Fingerprint);
        AssertSameResponse(response, claim.Record.Response);

        var read = await Store.GetAsync(key, CancellationToken.None);
        Assert.Equal(IdempotencyRecordState.Completed, read!.State);
        AssertSameResponse(response, read.Response);

        var second = await CreateSecondInstanceAsync(Time);
        try
        {
            var fromSecond = await second.TryClaimAsync(Claim(key), CancellationToken.None);
            Assert.Equal(ClaimStatus.Completed, fromSecond.Status);
            AssertSameResponse(response, fromSecond.Record!.Response);
        }
        finally
        {
            await DisposeIfNotSameAsync(second);
        }
    }

    [Fact]
    public async Task Completed_key_with_a_different_fingerprint_reports_the_stored_fingerprint()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key, "fp-1");
        Assert.True(await Store.CompleteAsync(key, owner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));

        var claim = await Store.TryClaimAsync(Claim(key, "fp-2"), CancellationToken.None);

        Assert.Equal(ClaimStatus.Completed, claim.Status);
        Assert.Equal("fp-1", claim.Record!.Fingerprint);
    }

    [Fact]
    public async Task Omitted_body_and_empty_body_round_trip()
    {
        var omittedKey = NewKey();
        var omittedOwner = await ClaimOwnedAsync(omittedKey);
        var omitted = SampleResponse().WithoutBody();
        Assert.True(await Store.CompleteAsync(omittedKey, omittedOwner, omitted, TimeSpan.FromHours(24), CancellationToken.None));

        var emptyKey = NewKey();
        var emptyOwner = await ClaimOwnedAsync(emptyKey);
        var empty = new StoredResponse(204, null, ReadOnlyMemory<byte>.Empty);
        Assert.True(await Store.CompleteAsync(emptyKey, emptyOwner, empty, TimeSpan.FromHours(24), CancellationToken.None));

        var readOmitted = await Store.GetAsync(omittedKey, CancellationToken.None);
        AssertSameResponse(omitted, readOmitted!.Response);
        Assert.True(readOmitted.Response!.BodyOmitted);

        var readEmpty = await Store.GetAsync(emptyKey, CancellationToken.None);
        AssertSameResponse(empty, readEmpty!.Response);
        Assert.False(readEmpty.Response!.BodyOmitted);
        Assert.Empty(readEmpty.Response.Headers);
    }

    [Fact]
    public async Task Complete_by_a_stranger_is_refused()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key);

        Assert.False(await Store.CompleteAsync(key, Guid.NewGuid(), SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));
        Assert.False(await Store.CompleteAsync(NewKey(), owner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));

        var record = await Store.GetAsync(key, CancellationToken.None);
        Assert.Equal(IdempotencyRecordState.InFlight, record!.State);
        Assert.Equal(owner, record.OwnerToken);
        Assert.Null(record.Response);
    }

    [Fact]
    public async Task Completing_twice_is_refused_and_keeps_the_first_response()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key);
        var first = SampleResponse();

        Assert.True(await Store.CompleteAsync(key, owner, first, TimeSpan.FromHours(24), CancellationToken.None));
        Assert.False(await Store.CompleteAsync(key, owner, new StoredResponse(500, null, new byte[] { 1 }), TimeSpan.FromHours(24), CancellationToken.None));

        AssertSameResponse(first, (await Store.GetAsync(key, CancellationToken.None))!.Response);
    }

    // ---- leases ----

    [Fact]
    public async Task Live_lease_is_not_taken_over()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key, lease: TimeSpan.FromMinutes(5));
        await AdvanceAsync(ShortLease);

        var claim = await Store.TryClaimAsync(Claim(key), CancellationToken.None);

        Assert.Equal(ClaimStatus.InFlight, claim.Status);
        Assert.Equal(owner, claim.Record!.OwnerToken);
    }

    [Fact]
    public async Task Expired_lease_is_taken_over_with_the_same_fingerprint()
    {
        var key = NewKey();
        var stale = await ClaimOwnedAsync(key);
        await AdvanceAsync(ShortLease * 2);

        var newOwner = Guid.NewGuid();
        var claim = await Store.TryClaimAsync(Claim(key, owner: newOwner), CancellationToken.None);

        Assert.Equal(ClaimStatus.Claimed, claim.Status);
        Assert.True(claim.TookOver);
        var record = await Store.GetAsync(key, CancellationToken.None);
        Assert.Equal(newOwner, record!.OwnerToken);
        Assert.Equal(IdempotencyRecordState.InFlight, record.State);
        Assert.NotEqual(stale, record.OwnerToken);
    }

    [Fact]
    public async Task Expired_lease_is_not_taken_over_with_a_different_fingerprint()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key, "fp-old");
        await AdvanceAsync(ShortLease * 2);

        var claim = await Store.TryClaimAsync(Claim(key, "fp-new"), CancellationToken.None);

        Assert.Equal(ClaimStatus.InFlight, claim.Status);
        Assert.False(claim.TookOver);
        Assert.Equal("fp-old", claim.Record!.Fingerprint);
        Assert.Equal(owner, claim.Record.OwnerToken);
        Assert.Equal(owner, (await Store.GetAsync(key, CancellationToken.None))!.OwnerToken);
    }

    [Fact]
    public async Task Stale_owner_is_fenced_after_a_takeover_and_the_new_owner_completes()
    {
        var key = NewKey();
        var stale = await ClaimOwnedAsync(key);
        await AdvanceAsync(ShortLease * 2);
        var newOwner = Guid.NewGuid();
        var takeover = await Store.TryClaimAsync(Claim(key, owner: newOwner), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, takeover.Status);
        var before = await Store.GetAsync(key, CancellationToken.None);

        Assert.False(await Store.CompleteAsync(key, stale, new StoredResponse(200, null, new byte[] { 1, 2, 3 }), TimeSpan.FromHours(24), CancellationToken.None));
        Assert.False(await Store.RenewAsync(key, stale, TimeSpan.FromHours(1), CancellationToken.None));
        Assert.False(await Store.ReleaseAsync(key, stale, CancellationToken.None));

        var after = await Store.GetAsync(key, CancellationToken.None);
        Assert.Equal(IdempotencyRecordState.InFlight, after!.State);
        Assert.Equal(newOwner, after.OwnerToken);
        Assert.Equal(before!.LeaseExpiresAt, after.LeaseExpiresAt);
        Assert.Null(after.Response);

        var response = SampleResponse();
        Assert.True(await Store.CompleteAsync(key, newOwner, response, TimeSpan.FromHours(24), CancellationToken.None));
        AssertSameResponse(response, (await Store.GetAsync(key, CancellationToken.None))!.Response);
    }

    [Fact]
    public async Task Renew_extends_the_lease()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key);
        var original = (await Store.GetAsync(key, CancellationToken.None))!.LeaseExpiresAt;

        await AdvanceAsync(ShortLease / 2);
        Assert.True(await Store.RenewAsync(key, owner, ShortLease * 4, CancellationToken.None));
        var renewed = (await Store.GetAsync(key, CancellationToken.None))!.LeaseExpiresAt;
        Assert.True(renewed > original, $"Lease {renewed:O} was not extended past {original:O}.");

        // Past the original lease, well within the renewed one.
        await AdvanceAsync(ShortLease);
        var claim = await Store.TryClaimAsync(Claim(key), CancellationToken.None);
        Assert.Equal(ClaimStatus.InFlight, claim.Status);
        Assert.Equal(owner, claim.Record!.OwnerToken);
    }

    [Fact]
    public async Task Renew_by_a_stranger_or_of_a_completed_record_is_refused()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key);
        Assert.False(await Store.RenewAsync(key, Guid.NewGuid(), TimeSpan.FromHours(1), CancellationToken.None));
        Assert.False(await Store.RenewAsync(NewKey(), owner, TimeSpan.FromHours(1), CancellationToken.None));

        Assert.True(await Store.CompleteAsync(key, owner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));
        Assert.False(await Store.RenewAsync(key, owner, TimeSpan.FromHours(1), CancellationToken.None));
        Assert.Equal(IdempotencyRecordState.Completed, (await Store.GetAsync(key, CancellationToken.None))!.State);
    }

    // ---- release ----

    [Fact]
    public async Task Release_deletes_only_for_the_owner_and_the_key_is_free_again()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key);

        Assert.False(await Store.ReleaseAsync(key, Guid.NewGuid(), CancellationToken.None));
        var intact = await Store.GetAsync(key, CancellationToken.None);
        Assert.Equal(owner, intact!.OwnerToken);
        Assert.Equal(IdempotencyRecordState.InFlight, intact.State);

        Assert.True(await Store.ReleaseAsync(key, owner, CancellationToken.None));
        Assert.Null(await Store.GetAsync(key, CancellationToken.None));
        Assert.False(await Store.ReleaseAsync(key, owner, CancellationToken.None));

        var next = await Store.TryClaimAsync(Claim(key, "another-fp"), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, next.Status);
        Assert.False(next.TookOver);
    }

    [Fact]
    public async Task Release_of_a_completed_record_is_refused()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key);
        var response = SampleResponse();
        Assert.True(await Store.CompleteAsync(key, owner, response, TimeSpan.FromHours(24), CancellationToken.None));

        Assert.False(await Store.ReleaseAsync(key, owner, CancellationToken.None));

        AssertSameResponse(response, (await Store.GetAsync(key, CancellationToken.None))!.Response);
    }

    // ---- retention and purge ----

    [Fact]
    public async Task Completed_record_past_retention_is_gone_and_the_key_can_be_claimed_again()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key, "fp-1");
        Assert.True(await Store.CompleteAsync(key, owner, SampleResponse(), ShortRetention, CancellationToken.None));
        Assert.NotNull(await Store.GetAsync(key, CancellationToken.None));

        await AdvanceAsync(ShortRetention * 2);

        Assert.Null(await Store.GetAsync(key, CancellationToken.None));
        var newOwner = Guid.NewGuid();
        var claim = await Store.TryClaimAsync(Claim(key, "fp-2", newOwner), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, claim.Status);
        Assert.False(claim.TookOver);
        var record = await Store.GetAsync(key, CancellationToken.None);
        Assert.Equal(newOwner, record!.OwnerToken);
        Assert.Equal("fp-2", record.Fingerprint);
        Assert.Null(record.Response);
    }

    [Fact]
    public async Task Purge_deletes_only_expired_records_in_batches()
    {
        // Three expired: two completed with a short retention, one in flight whose retention ran out.
        var expiredKeys = new List<string>();
        for (var i = 0; i < 2; i++)
        {
            var key = NewKey();
            expiredKeys.Add(key);
            var owner = await ClaimOwnedAsync(key);
            Assert.True(await Store.CompleteAsync(key, owner, SampleResponse(), ShortRetention, CancellationToken.None));
        }

        expiredKeys.Add(NewKey());
        var abandoned = await Store.TryClaimAsync(new ClaimRequest(expiredKeys[^1], "fp", Guid.NewGuid(), ShortLease, ShortRetention), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, abandoned.Status);

        // Two live ones: a completed record and an in-flight claim, both with the default 24 h retention.
        var liveCompleted = NewKey();
        var liveOwner = await ClaimOwnedAsync(liveCompleted);
        Assert.True(await Store.CompleteAsync(liveCompleted, liveOwner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));
        var liveInFlight = NewKey();
        await ClaimOwnedAsync(liveInFlight, lease: TimeSpan.FromHours(1));

        await AdvanceAsync(ShortRetention * 2);

        if (ExpiresRecordsItself)
        {
            Assert.Equal(0, await Store.PurgeExpiredAsync(2, CancellationToken.None));
            foreach (var key in expiredKeys)
            {
                Assert.Null(await Store.GetAsync(key, CancellationToken.None));
            }

            Assert.Equal(IdempotencyRecordState.Completed, (await Store.GetAsync(liveCompleted, CancellationToken.None))!.State);
            Assert.Equal(IdempotencyRecordState.InFlight, (await Store.GetAsync(liveInFlight, CancellationToken.None))!.State);
            return;
        }

        var batches = new List<int>();
        int purged;
        do
        {
            purged = await Store.PurgeExpiredAsync(2, CancellationToken.None);
            Assert.InRange(purged, 0, 2);
            batches.Add(purged);
        }
        while (purged == 2 && batches.Count < 10);

        Assert.Equal(3, batches.Sum());
        Assert.Equal(0, await Store.PurgeExpiredAsync(100, CancellationToken.None));
        Assert.Equal(IdempotencyRecordState.Completed, (await Store.GetAsync(liveCompleted, CancellationToken.None))!.State);
        Assert.Equal(IdempotencyRecordState.InFlight, (await Store.GetAsync(liveInFlight, CancellationToken.None))!.State);
    }

    [Fact]
    public async Task Purge_with_nothing_expired_deletes_nothing()
    {
        var key = NewKey();
        await ClaimOwnedAsync(key);

        Assert.Equal(0, await Store.PurgeExpiredAsync(10, CancellationToken.None));
        Assert.NotNull(await Store.GetAsync(key, CancellationToken.None));
    }

    // ---- waiting ----

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public async Task Waiter_wakes_when_the_owner_finishes(bool complete, bool fromSecondInstance)
    {
        var second = fromSecondInstance ? await CreateSecondInstanceAsync(Time) : Store;
        try
        {
            var key = NewKey();
            var owner = await ClaimOwnedAsync(key, lease: TimeSpan.FromMinutes(5));

            // Far longer than the liveness bound: only a wake-up can finish this in time.
            var wait = Store.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(30), CancellationToken.None).AsTask();
            var finished = complete
                ? await second.CompleteAsync(key, owner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None)
                : await second.ReleaseAsync(key, owner, CancellationToken.None);
            Assert.True(finished);

            await Live(wait, complete ? "A wait woken by completion" : "A wait woken by release");
        }
        finally
        {
            await DisposeIfNotSameAsync(second);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Wait_returns_at_once_when_the_record_changed_before_the_call(bool complete)
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key, lease: TimeSpan.FromMinutes(5));
        Assert.True(complete
            ? await Store.CompleteAsync(key, owner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None)
            : await Store.ReleaseAsync(key, owner, CancellationToken.None));

        await Live(Store.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(30), CancellationToken.None).AsTask(), "A wait on a changed record");
    }

    [Fact]
    public async Task Wait_returns_at_once_when_another_owner_took_over_before_the_call()
    {
        var key = NewKey();
        var stale = await ClaimOwnedAsync(key);
        await AdvanceAsync(ShortLease * 2);
        Assert.Equal(ClaimStatus.Claimed, (await Store.TryClaimAsync(Claim(key, lease: TimeSpan.FromMinutes(5)), CancellationToken.None)).Status);

        await Live(Store.WaitForChangeAsync(key, stale, TimeSpan.FromSeconds(30), CancellationToken.None).AsTask(), "A wait on a taken-over record");
    }

    [Fact]
    public async Task Wait_on_an_unchanged_record_returns_after_its_timeout()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key, lease: TimeSpan.FromMinutes(5));
        var timeout = UsesAppClock ? TimeSpan.FromSeconds(2) : TimeSpan.FromMilliseconds(300);

        var wait = Store.WaitForChangeAsync(key, owner, timeout, CancellationToken.None).AsTask();
        await AdvanceUntilDoneAsync(wait, timeout);

        await Live(wait, "A wait with a short timeout");
        var record = await Store.GetAsync(key, CancellationToken.None);
        Assert.Equal(IdempotencyRecordState.InFlight, record!.State);
        Assert.Equal(owner, record.OwnerToken);
    }

    [Fact]
    public async Task Wait_throws_when_cancelled()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key, lease: TimeSpan.FromMinutes(5));
        using var cts = new CancellationTokenSource();

        var wait = Store.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(30), cts.Token).AsTask();
        await cts.CancelAsync();

        await Live(Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait), "A cancelled wait");
    }

    [Fact]
    public async Task Wait_with_a_cancelled_token_throws()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key, lease: TimeSpan.FromMinutes(5));

        await Live(
            Assert.ThrowsAnyAsync<OperationCanceledException>(
                () => Store.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(30), new CancellationToken(canceled: true)).AsTask()),
            "A wait with a cancelled token");
    }

    [Fact]
    public async Task Waiter_wakes_for_a_later_change_after_an_earlier_wait_timed_out()
    {
        var key = NewKey();
        var owner = await ClaimOwnedAsync(key, lease: TimeSpan.FromMinutes(5));
        var timeout = UsesAppClock ? TimeSpan.FromSeconds(2) : TimeSpan.FromMilliseconds(300);
        var first = Store.WaitForChangeAsync(key, owner, timeout, CancellationToken.None).AsTask();
        await AdvanceUntilDoneAsync(first, timeout);
        await Live(first, "A wait with a short timeout");

        var second = Store.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(30), CancellationToken.None).AsTask();
        Assert.True(await Store.CompleteAsync(key, owner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));

        await Live(second, "A wait after an earlier timed-out wait");
    }

    // ---- administration (IIdempotencyStoreAdmin: idem keys, doctor, migrate) ----

    [Fact]
    public async Task Admin_lists_by_state_deletes_one_key_fencing_its_owner_describes_and_migrates_idempotently()
    {
        if (Store is not IIdempotencyStoreAdmin admin)
        {
            // The in-memory store (tests, one process) has no administration, and a node's local replay cache is not
            // where an operator administers keys: `idem` opens the durable store itself.
            Assert.True(Store is InMemoryIdempotencyStore or LocalReplayCacheStore, Store.GetType().Name);
            return;
        }

        var completed = NewKey();
        var completedOwner = await ClaimOwnedAsync(completed);
        Assert.True(await Store.CompleteAsync(completed, completedOwner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));
        var inFlight = NewKey();
        var inFlightOwner = await ClaimOwnedAsync(inFlight, lease: TimeSpan.FromMinutes(5));

        Assert.Equal([completed], await ListAsync(admin, new IdempotencyRecordQuery { State = IdempotencyRecordState.Completed, KeyPrefix = completed }));
        Assert.Empty(await ListAsync(admin, new IdempotencyRecordQuery { State = IdempotencyRecordState.InFlight, KeyPrefix = completed }));
        Assert.Equal([inFlight], await ListAsync(admin, new IdempotencyRecordQuery { State = IdempotencyRecordState.InFlight, KeyPrefix = inFlight }));
        Assert.Empty(await ListAsync(admin, new IdempotencyRecordQuery { Expired = true, KeyPrefix = completed }));

        Assert.True(await admin.DeleteAsync(completed, CancellationToken.None));
        Assert.Null(await Store.GetAsync(completed, CancellationToken.None));
        Assert.False(await admin.DeleteAsync(completed, CancellationToken.None));
        Assert.Equal(ClaimStatus.Claimed, (await Store.TryClaimAsync(Claim(completed), CancellationToken.None)).Status); // runs again

        // Deleting an in-flight record fences its owner: the completion is refused.
        Assert.True(await admin.DeleteAsync(inFlight, CancellationToken.None));
        Assert.False(await Store.CompleteAsync(inFlight, inFlightOwner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));

        var description = await admin.DescribeAsync(CancellationToken.None);
        var now = UsesAppClock ? Time.GetUtcNow() : TimeProvider.System.GetUtcNow();
        Assert.InRange(description.StoreTime, now - TimeSpan.FromMinutes(5), now + TimeSpan.FromMinutes(5));
        Assert.Equal(description.LatestSchemaVersion, description.SchemaVersion); // the schema in use is current
        var migration = await admin.MigrateAsync(CancellationToken.None);
        Assert.Empty(migration.Applied);
        Assert.Equal(description.LatestSchemaVersion, migration.VersionAfter);
    }

    [Fact]
    public async Task Metadata_written_at_claim_is_listed_and_filters_by_principal_and_route_while_records_without_it_match_no_filter()
    {
        if (Store is not IIdempotencyStoreAdmin admin)
        {
            return; // the in-memory store and the local replay cache have no listing, and may drop the metadata
        }

        var withMetadata = NewKey();
        var owner = Guid.NewGuid();
        var metadata = IdempotencyRecordMetadata.Create("user-" + withMetadata, "POST /orders/{id}");
        Assert.Equal(ClaimStatus.Claimed, (await Store.TryClaimAsync(Claim(withMetadata, owner: owner) with { Metadata = metadata }, CancellationToken.None)).Status);
        Assert.True(await Store.CompleteAsync(withMetadata, owner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));
        var without = NewKey();
        var withoutOwner = await ClaimOwnedAsync(without);
        Assert.True(await Store.CompleteAsync(without, withoutOwner, SampleResponse(), TimeSpan.FromHours(24), CancellationToken.None));

        var listed = new List<IdempotencyRecord>();
        await foreach (var record in admin.ListAsync(new IdempotencyRecordQuery { KeyPrefix = withMetadata }, CancellationToken.None))
        {
            listed.Add(record);
        }

        var kept = Assert.Single(listed).Metadata;
        Assert.NotNull(kept);
        Assert.Equal(metadata.PrincipalHash, kept.PrincipalHash); // through completion
        Assert.Equal("POST /orders/{id}", kept.Operation);
        Assert.DoesNotContain("user-", kept.PrincipalHash, StringComparison.Ordinal);

        var byPrincipal = await ListAsync(admin, new IdempotencyRecordQuery { PrincipalHash = metadata.PrincipalHash, Limit = 100_000 });
        Assert.Equal([withMetadata], byPrincipal);
        Assert.Equal([withMetadata], (await ListAsync(admin, new IdempotencyRecordQuery { Route = "/orders/{id}", Limit = 100_000 })).Where(k => k == withMetadata || k == without));
        Assert.Empty(await ListAsync(admin, new IdempotencyRecordQuery { Route = "GET /orders/{id}", KeyPrefix = withMetadata }));
        Assert.Empty(await ListAsync(admin, new IdempotencyRecordQuery { Route = "{id}", KeyPrefix = withMetadata }));
        Assert.Equal([without], await ListAsync(admin, new IdempotencyRecordQuery { KeyPrefix = without })); // unfiltered, it is there
    }

    private static async Task<List<string>> ListAsync(IIdempotencyStoreAdmin admin, IdempotencyRecordQuery query)
    {
        var keys = new List<string>();
        await foreach (var record in admin.ListAsync(query, CancellationToken.None))
        {
            keys.Add(record.Key);
        }

        return keys;
    }

    private async ValueTask DisposeIfNotSameAsync(IIdempotencyStore other)
    {
        if (ReferenceEquals(other, Store))
        {
            return;
        }

        if (other is IAsyncDisposable asyncDisposable)
        {
            await asyncDisposable.DisposeAsync();
        }
        else
        {
            (other as IDisposable)?.Dispose();
        }
    }
}
