using Idem.Redis;
using Idem.TestUtils;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>One Redis server for every Redis test class in the run.</summary>
[CollectionDefinition(Name)]
public sealed class RedisServerGroup : ICollectionFixture<RedisServer>
{
    public const string Name = "Redis";
}

/// <summary>
/// The conformance suite against Redis through one configuration string (a server, or a cluster's node list); every
/// test gets its own key prefix (and so its own channel). Subclasses say where Redis is.
/// </summary>
public abstract class RedisConformanceTests(string configuration, string prefixLabel) : IdempotencyStoreConformanceTests
{
    private readonly string _prefix = RedisServer.NewPrefix(prefixLabel);
    private readonly List<RedisIdempotencyStore> _secondInstances = [];

    // Leases are judged by Redis's clock: tests use short real durations.
    protected override bool UsesAppClock => false;

    // Retention is the key's TTL: Redis deletes expired records by itself.
    protected override bool ExpiresRecordsItself => true;

    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new RedisIdempotencyStore(Options()));

    // A second node: its own store instance, multiplexer and subscription, over the same keys.
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

    private RedisIdempotencyStoreOptions Options() => new() { Configuration = configuration, KeyPrefix = _prefix };
}

/// <summary>The conformance suite against a real Redis server.</summary>
[Collection(RedisServerGroup.Name)]
public sealed class RedisStoreTests(RedisServer server) : RedisConformanceTests(server.Endpoint, "conf");
