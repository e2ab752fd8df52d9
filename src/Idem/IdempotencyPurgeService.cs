using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Idem;

/// <summary>Deletes expired records in small batches, so the store stays small and no purge holds long locks.</summary>
internal sealed class IdempotencyPurgeService(
    IServiceProvider services,
    IOptions<IdempotencyPurgeOptions> options,
    TimeProvider timeProvider,
    ILogger<IdempotencyPurgeService>? logger = null) : BackgroundService
{
    private readonly ILogger _logger = logger ?? NullLogger<IdempotencyPurgeService>.Instance;

    // The host creates hosted services before it validates options: an app without a store hears why here.
    private readonly IIdempotencyStore _store = services.GetService<IIdempotencyStore>()
        ?? throw new InvalidOperationException(IdempotencyCoreServiceCollectionExtensions.NoStoreMessage);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.Interval;
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
        var batchSize = options.Value.BatchSize;
        try
        {
            int purged;
            do
            {
                purged = await _store.PurgeExpiredAsync(batchSize, cancellationToken).ConfigureAwait(false);
                if (purged > 0)
                {
                    Log.Purged(_logger, purged);
                }
            }
            while (purged == batchSize && !cancellationToken.IsCancellationRequested);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.PurgeFailed(_logger, ex);
        }
    }
}
