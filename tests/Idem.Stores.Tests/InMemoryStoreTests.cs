namespace Idem.Stores.Tests;

public sealed class InMemoryStoreTests : IdempotencyStoreConformanceTests
{
    private InMemoryIdempotencyStore? _shared;

    protected override bool UsesAppClock => true;

    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(_shared = new InMemoryIdempotencyStore(timeProvider));

    // One process: a second "instance" is the same map.
    protected override ValueTask<IIdempotencyStore> CreateSecondInstanceAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(_shared!);
}
