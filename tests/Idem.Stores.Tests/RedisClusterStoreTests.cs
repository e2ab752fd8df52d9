using Idem.Redis;
using Idem.TestUtils;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>One Redis Cluster (3 masters, 3 replicas) for every cluster test class in the run.</summary>
[CollectionDefinition(Name)]
public sealed class RedisClusterGroup : ICollectionFixture<RedisCluster>
{
    public const string Name = "Redis Cluster";
}

/// <summary>
/// The conformance suite against a real Redis Cluster, through one configuration string listing the nodes (what a
/// user writes); every test gets its own prefix, and its keys spread over the three masters.
/// </summary>
[Collection(RedisClusterGroup.Name)]
public sealed class RedisClusterStoreTests(RedisCluster cluster) : IdempotencyStoreConformanceTests
{
    private readonly string _prefix = RedisServer.NewPrefix("cluster");
    private readonly List<RedisIdempotencyStore> _secondInstances = [];

    protected override bool UsesAppClock => false;

    protected override bool ExpiresRecordsItself => true;

    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new RedisIdempotencyStore(Options()));

    protected override ValueTask<IIdempotencyStore> CreateSecondInstanceAsync(TimeProvider timeProvider)
    {
        var store = new RedisIdempotencyStore(Options());
        _secondInstances.Add(store);
        return ValueTask.FromResult<IIdempotencyStore>(store);
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        foreach (var store in _secondInstances)
        {
            await store.DisposeAsync();
        }
    }

    private RedisIdempotencyStoreOptions Options() => new() { Configuration = cluster.Configuration, KeyPrefix = _prefix };
}
