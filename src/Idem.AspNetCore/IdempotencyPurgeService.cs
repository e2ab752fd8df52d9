using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Idem.AspNetCore;

/// <summary>Deletes expired records in small batches, so the store stays small and no purge holds long locks.</summary>
internal sealed class IdempotencyPurgeService(
    IIdempotencyStore store,
    IOptions<IdempotencyOptions> options,
    TimeProvider timeProvider,
    ILogger<IdempotencyPurgeService> logger) : BackgroundService
{
    private const int BatchSize = 500;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.PurgeInterval;
        if (interval <= TimeSpan.Zero)
        {
            return;
        }

        using var timer = new PeriodicTimer(interval, timeProvider);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                await PurgeOnceAsync(stoppingToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    internal async Task PurgeOnceAsync(CancellationToken cancellationToken)
    {
        try
        {
            int purged;
            do
            {
                purged = await store.PurgeExpiredAsync(BatchSize, cancellationToken).ConfigureAwait(false);
                if (purged > 0)
                {
                    Log.Purged(logger, purged);
                }
            }
            while (purged == BatchSize && !cancellationToken.IsCancellationRequested);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.PurgeFailed(logger, ex);
        }
    }
}
