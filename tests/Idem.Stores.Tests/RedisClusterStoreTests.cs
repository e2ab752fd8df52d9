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
public sealed class RedisClusterStoreTests(RedisCluster cluster) : RedisConformanceTests(cluster.Configuration, "cluster");
