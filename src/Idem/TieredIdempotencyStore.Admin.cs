namespace Idem;

/// <summary>Administration of a tiered store goes to its durable store; a deletion also drops the cached copy.</summary>
public sealed partial class TieredIdempotencyStore : IIdempotencyStoreAdmin
{
    /// <inheritdoc />
    public IAsyncEnumerable<IdempotencyRecord> ListAsync(IdempotencyRecordQuery query, CancellationToken cancellationToken) =>
        DurableAdmin.ListAsync(query, cancellationToken);

    /// <inheritdoc />
    /// <remarks>
    /// Deletes the durable record first (so no new claim can be answered from it), then the cached response when the
    /// cache supports deletion; otherwise a cached replay can still be served until the entry expires.
    /// </remarks>
    public async ValueTask<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        var deleted = await DurableAdmin.DeleteAsync(key, cancellationToken).ConfigureAwait(false);
        if (_cache is IIdempotencyStoreAdmin cache)
        {
            deleted |= await cache.DeleteAsync(key, cancellationToken).ConfigureAwait(false);
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
