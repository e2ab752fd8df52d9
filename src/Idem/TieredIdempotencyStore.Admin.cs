namespace Idem;

/// <summary>Administration of a tiered store goes to its durable store; a deletion also drops the cached copy.</summary>
public sealed partial class TieredIdempotencyStore : IIdempotencyStoreAdmin, IIdempotencyDeletionNotifier
{
    /// <inheritdoc />
    /// <remarks>
    /// The durable store's notifications (a deletion always goes through it first); when the durable store sends none,
    /// the subscription never calls back, and a node's copies live until their records expire.
    /// </remarks>
    public IDisposable SubscribeToDeletions(Action<string> deleted, Action missed)
    {
        ArgumentNullException.ThrowIfNull(deleted);
        ArgumentNullException.ThrowIfNull(missed);
        return _durable is IIdempotencyDeletionNotifier notifier ? notifier.SubscribeToDeletions(deleted, missed) : NoSubscription.Instance;
    }

    /// <inheritdoc />
    public IAsyncEnumerable<IdempotencyRecord> ListAsync(IdempotencyRecordQuery query, CancellationToken cancellationToken) =>
        DurableAdmin.ListAsync(query, cancellationToken);

    /// <inheritdoc />
    /// <remarks>
    /// Deletes the durable record first, then the cached response when the cache supports deletion, under the cache's
    /// deadline like every cache call: a cache that fails or cannot delete keeps serving its copy as a replay until the
    /// entry expires (the failure is logged and counted as <c>idem.cache.errors</c> with operation <c>delete</c>).
    /// </remarks>
    public async ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        var deleted = await DurableAdmin.DeleteAsync(key, cancellationToken).ConfigureAwait(false);
        if (_cache is IIdempotencyStoreAdmin)
        {
            deleted |= await CallCacheAsync(
                static (cache, k, ct) => ((IIdempotencyStoreAdmin)cache).DeleteAsync(k, ct),
                key,
                "delete",
                cancellationToken).ConfigureAwait(false);
        }

        return deleted;
    }

    /// <inheritdoc />
    public ValueTask<IdempotencyStoreDescription> DescribeAsync(CancellationToken cancellationToken) =>
        DurableAdmin.DescribeAsync(cancellationToken);

    /// <inheritdoc />
    public ValueTask<IdempotencySchemaMigration> MigrateAsync(CancellationToken cancellationToken) =>
        DurableAdmin.MigrateAsync(cancellationToken);

    private IIdempotencyStoreAdmin DurableAdmin => _durable as IIdempotencyStoreAdmin
        ?? throw new NotSupportedException($"The durable store {_durable.GetType().Name} does not implement {nameof(IIdempotencyStoreAdmin)}.");
}

/// <summary>A subscription to nothing.</summary>
internal sealed class NoSubscription : IDisposable
{
    public static readonly NoSubscription Instance = new();

    public void Dispose()
    {
    }
}
