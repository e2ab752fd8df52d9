namespace Idem;

/// <summary>
/// The background purge of expired records, registered by <c>AddIdempotencyCore()</c> (and so by
/// <c>AddIdempotency()</c>) for every host: a worker on a SQL store needs it as much as a web app does. Configure with
/// <c>services.Configure&lt;IdempotencyPurgeOptions&gt;(…)</c>; in ASP.NET Core apps
/// <c>IdempotencyOptions.PurgeInterval</c> sets <see cref="Interval"/>.
/// </summary>
public sealed class IdempotencyPurgeOptions
{
    /// <summary>How often expired records are deleted; <see cref="TimeSpan.Zero"/> turns the purge off.</summary>
    /// <value>1 minute.</value>
    public TimeSpan Interval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Records deleted per store call. A purge repeats full batches until a short one, so a large backlog is cleared
    /// in one run without one long statement holding locks on the store.
    /// </summary>
    /// <value>500.</value>
    public int BatchSize { get; set; } = 500;

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Interval, TimeSpan.Zero, nameof(Interval));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(BatchSize, nameof(BatchSize));
    }
}
