using System.Diagnostics;
using Idem.Redis;
using Idem.TestUtils;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using StackExchange.Redis;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>What only the Redis store has: Redis's clock, key TTLs, many multiplexers, an outage, registration.</summary>
[Collection(RedisServerGroup.Name)]
public sealed class RedisStoreSpecificTests(RedisServer server) : IAsyncLifetime
{
    private static readonly TimeSpan Day = TimeSpan.FromHours(24);
    private readonly string _prefix = RedisServer.NewPrefix("spec");
    private readonly List<IAsyncDisposable> _disposables = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var disposable in _disposables)
        {
            await disposable.DisposeAsync();
        }
    }

    [Fact]
    public async Task Leases_and_expiry_are_judged_by_Redis_clock_not_the_node_clock()
    {
        // The node's clock is 26 years off; the store must not care.
        var nodeClock = new FakeTimeProvider(new DateTimeOffset(2000, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var store = Track(new RedisIdempotencyStore(Options(), null, nodeClock));
        var multiplexer = await Multiplexer();
        var redisNow = await multiplexer.GetServer(multiplexer.GetEndPoints()[0]).TimeAsync();

        var key = Guid.NewGuid().ToString("N");
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None)).Status);
        var record = await store.GetAsync(key, CancellationToken.None);

        var redisTime = new DateTimeOffset(DateTime.SpecifyKind(redisNow, DateTimeKind.Utc));
        Assert.InRange(record!.LeaseExpiresAt, redisTime + TimeSpan.FromSeconds(29), redisTime + TimeSpan.FromSeconds(35));
        Assert.InRange(record.ExpiresAt, redisTime + Day - TimeSpan.FromSeconds(1), redisTime + Day + TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Every_record_carries_a_TTL_no_longer_than_its_retention()
    {
        var store = Track(new RedisIdempotencyStore(Options()));
        var db = (await Multiplexer()).GetDatabase();
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();

        await store.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(10)), CancellationToken.None);
        var inFlightTtl = await db.KeyTimeToLiveAsync(store.RedisKeyFor(key));
        Assert.NotNull(inFlightTtl);
        Assert.InRange(inFlightTtl.Value, TimeSpan.FromMinutes(9), TimeSpan.FromMinutes(10));

        Assert.True(await store.RenewAsync(key, owner, TimeSpan.FromMinutes(1), CancellationToken.None));
        Assert.InRange((await db.KeyTimeToLiveAsync(store.RedisKeyFor(key)))!.Value, TimeSpan.FromMinutes(9), TimeSpan.FromMinutes(10));

        Assert.True(await store.CompleteAsync(key, owner, new StoredResponse(200, null, new byte[] { 1 }), TimeSpan.FromSeconds(90), CancellationToken.None));
        var completedTtl = await db.KeyTimeToLiveAsync(store.RedisKeyFor(key));
        Assert.NotNull(completedTtl);
        Assert.InRange(completedTtl.Value, TimeSpan.FromSeconds(80), TimeSpan.FromSeconds(90));

        // Nothing the store wrote lives without a TTL.
        var redisServer = (await Multiplexer()).GetServer((await Multiplexer()).GetEndPoints()[0]);
        await foreach (var redisKey in redisServer.KeysAsync(pattern: _prefix + "*"))
        {
            Assert.NotNull(await db.KeyTimeToLiveAsync(redisKey));
        }
    }

    [Fact]
    public async Task Record_key_carries_a_hash_tag_so_a_key_lives_in_one_cluster_slot()
    {
        var store = Track(new RedisIdempotencyStore(Options()));
        Assert.Equal(_prefix + "{abc}", (string)store.RedisKeyFor("abc")!);
        Assert.Throws<InvalidOperationException>(() => new RedisIdempotencyStoreOptions { Configuration = "localhost", KeyPrefix = "a{b" }.Validate());
    }

    [Fact]
    public async Task Parallel_claims_through_two_multiplexers_yield_exactly_one_owner_in_every_round()
    {
        var nodeA = Track(new RedisIdempotencyStore(Options()));
        var nodeB = Track(new RedisIdempotencyStore(Options()));
        for (var round = 0; round < 5; round++)
        {
            var key = Guid.NewGuid().ToString("N");
            var results = await Task.WhenAll(Enumerable.Range(0, 256).Select(i => Task.Run(async () =>
            {
                var owner = Guid.NewGuid();
                var result = await (i % 2 == 0 ? nodeA : nodeB).TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
                return (owner, result);
            })));

            var winner = Assert.Single(results, r => r.result.Status == ClaimStatus.Claimed);
            Assert.All(results.Where(r => r.result.Status != ClaimStatus.Claimed), r =>
            {
                Assert.Equal(ClaimStatus.InFlight, r.result.Status);
                Assert.Equal(winner.owner, r.result.Record!.OwnerToken);
            });
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_waiter_on_one_node_is_woken_through_pub_sub_when_another_node_finishes(bool complete)
    {
        var waiterNode = Track(new RedisIdempotencyStore(Options()));
        var ownerNode = Track(new RedisIdempotencyStore(Options()));
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await ownerNode.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromMinutes(5), Day), CancellationToken.None)).Status);

        var wait = waiterNode.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(60), CancellationToken.None).AsTask();

        // Only once the waiter has subscribed and re-read (and flagged) the record is the change made, so nothing but
        // the published message can end the wait in time.
        var db = (await Multiplexer()).GetDatabase();
        var flagged = Stopwatch.StartNew();
        while (!await db.HashExistsAsync(waiterNode.RedisKeyFor(key), "w"))
        {
            Assert.True(flagged.Elapsed < TimeSpan.FromSeconds(10), "The waiter never flagged the record.");
            await Task.Delay(10);
        }

        Assert.False(wait.IsCompleted);
        Assert.True(complete
            ? await ownerNode.CompleteAsync(key, owner, new StoredResponse(200, null, new byte[] { 1 }), Day, CancellationToken.None)
            : await ownerNode.ReleaseAsync(key, owner, CancellationToken.None));

        Assert.Same(wait, await Task.WhenAny(wait, Task.Delay(TimeSpan.FromSeconds(10))));
        await wait;
    }

    [Fact]
    public async Task An_outage_makes_every_call_fail_fast_with_an_exception_never_a_claim()
    {
        await using var privateServer = await RedisServer.StartPrivateAsync();
        var store = Track(new RedisIdempotencyStore(new RedisIdempotencyStoreOptions
        {
            Configuration = privateServer.Endpoint,
            KeyPrefix = _prefix,
            OperationTimeout = TimeSpan.FromSeconds(1),
        }));
        var owner = Guid.NewGuid();
        var key = Guid.NewGuid().ToString("N");
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None)).Status);

        await privateServer.KillAsync();

        var calls = new (string Name, Func<Task> Call)[]
        {
            ("claim", async () => await store.TryClaimAsync(new ClaimRequest(Guid.NewGuid().ToString("N"), "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None)),
            ("complete", async () => await store.CompleteAsync(key, owner, new StoredResponse(200, null, new byte[] { 1 }), Day, CancellationToken.None)),
            ("renew", async () => await store.RenewAsync(key, owner, TimeSpan.FromSeconds(30), CancellationToken.None)),
            ("release", async () => await store.ReleaseAsync(key, owner, CancellationToken.None)),
            ("get", async () => await store.GetAsync(key, CancellationToken.None)),
            ("wait", async () => await store.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(30), CancellationToken.None)),
        };
        foreach (var (name, call) in calls)
        {
            var clock = Stopwatch.StartNew();
            var ex = await Record.ExceptionAsync(call);
            Assert.True(ex is not null, $"{name} during an outage did not throw.");
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"{name} took {clock.Elapsed} to fail.");
        }

        // A storm during the outage: every claim throws, none is reported as claimed, all within the bound.
        var storm = Stopwatch.StartNew();
        var outcomes = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => Task.Run(async () =>
        {
            try
            {
                return (await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None)).Status.ToString();
            }
            catch (Exception ex)
            {
                return ex.GetType().Name;
            }
        })));
        Assert.DoesNotContain(nameof(ClaimStatus.Claimed), outcomes);
        Assert.DoesNotContain(nameof(ClaimStatus.InFlight), outcomes);
        Assert.True(storm.Elapsed < TimeSpan.FromSeconds(10), $"The storm took {storm.Elapsed} to fail.");
    }

    [Fact]
    public async Task A_server_that_stops_answering_is_cut_off_at_the_operation_timeout()
    {
        await using var privateServer = await RedisServer.StartPrivateAsync();

        // The application's multiplexer would wait 30 s; the store's own deadline must end each call first.
        var options = StackExchange.Redis.ConfigurationOptions.Parse(privateServer.Endpoint);
        options.AsyncTimeout = 30_000;
        options.SyncTimeout = 30_000;
        var multiplexer = await ConnectionMultiplexer.ConnectAsync(options);
        _disposables.Add(multiplexer);
        var store = Track(new RedisIdempotencyStore(new RedisIdempotencyStoreOptions
        {
            ConnectionMultiplexer = multiplexer,
            KeyPrefix = _prefix,
            OperationTimeout = TimeSpan.FromMilliseconds(500),
        }));
        var key = Guid.NewGuid().ToString("N");
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None)).Status);

        await privateServer.SetFrozenAsync(true);
        try
        {
            var clock = Stopwatch.StartNew();
            await Assert.ThrowsAsync<TimeoutException>(async () =>
                await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None));
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        }
        finally
        {
            await privateServer.SetFrozenAsync(false);
        }
    }

    [Fact]
    public async Task A_store_whose_server_never_answered_fails_fast_too()
    {
        // Nothing listens on this port: the first connection attempt fails.
        var store = Track(new RedisIdempotencyStore(new RedisIdempotencyStoreOptions { Configuration = "127.0.0.1:1", KeyPrefix = _prefix, OperationTimeout = TimeSpan.FromSeconds(1) }));
        var clock = Stopwatch.StartNew();
        await Assert.ThrowsAnyAsync<Exception>(async () => await store.TryClaimAsync(new ClaimRequest("k", "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task UseRedisStore_registers_a_working_store_and_validates_at_registration()
    {
        var services = new ServiceCollection();
        var builder = new TestBuilder(services);
        builder.UseRedisStore(server.Endpoint, o => o.KeyPrefix = _prefix);
        await using (var provider = services.BuildServiceProvider())
        {
            var store = provider.GetRequiredService<IIdempotencyStore>();
            Assert.IsType<RedisIdempotencyStore>(store);
            Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest("k", "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None)).Status);
        }

        Assert.Throws<InvalidOperationException>(() => builder.UseRedisStore(server.Endpoint, o => o.OperationTimeout = TimeSpan.Zero));
        Assert.Throws<InvalidOperationException>(() => builder.UseRedisStore(server.Endpoint, o => o.KeyPrefix = "{x}"));
        Assert.ThrowsAny<ArgumentException>(() => builder.UseRedisStore(" "));
    }

    private RedisIdempotencyStoreOptions Options() => new() { Configuration = server.Endpoint, KeyPrefix = _prefix };

    private T Track<T>(T disposable) where T : IAsyncDisposable
    {
        _disposables.Add(disposable);
        return disposable;
    }

    private async Task<IConnectionMultiplexer> Multiplexer()
    {
        var multiplexer = await ConnectionMultiplexer.ConnectAsync(server.Endpoint);
        _disposables.Add(multiplexer);
        return multiplexer;
    }

    internal sealed class TestBuilder(IServiceCollection services) : IIdempotencyBuilder
    {
        public IServiceCollection Services { get; } = services;
    }
}
