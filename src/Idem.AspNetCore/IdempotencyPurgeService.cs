using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Idem.AspNetCore;

/// <summary>Deletes expired records in small batches, so the store stays small and no purge holds long locks.</summary>
internal sealed class IdempotencyPurgeService(
    IServiceProvider services,
    IOptions<IdempotencyOptions> options,
    TimeProvider timeProvider,
    ILogger<IdempotencyPurgeService> logger) : BackgroundService
{
    private const int BatchSize = 500;

    // The host creates hosted services before it validates options: an app without a store hears why here.
    private readonly IIdempotencyStore _store = services.GetService<IIdempotencyStore>()
        ?? throw new InvalidOperationException(Microsoft.Extensions.DependencyInjection.IdempotencyServiceCollectionExtensions.NoStoreMessage);

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
                purged = await _store.PurgeExpiredAsync(BatchSize, cancellationToken).ConfigureAwait(false);
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
