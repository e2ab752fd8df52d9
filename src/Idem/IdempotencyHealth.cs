using System.Diagnostics;

namespace Idem;

/// <summary>How well a store (or one tier of it) can protect requests. Ordered from worst to best.</summary>
public enum IdempotencyHealthStatus
{
    /// <summary>The store cannot answer: protected requests get 503 (or run unprotected where a policy fails open).</summary>
    Unhealthy = 0,

    /// <summary>The store answers, but not at full strength (for example a tiered store serving without its cache).</summary>
    Degraded = 1,

    /// <summary>The store answers within its deadline.</summary>
    Healthy = 2,
}

/// <summary>The result of a store health probe: a status, a sentence for an operator, figures and the last error.</summary>
public sealed class IdempotencyHealthResult
{
    /// <summary>Creates a result.</summary>
    /// <param name="status">The status.</param>
    /// <param name="description">What it means for requests, in plain words.</param>
    /// <param name="data">Figures for the report (latencies in milliseconds, tier states, last errors); never keys or secrets.</param>
    /// <param name="exception">The failure behind an unhealthy or degraded status, if any.</param>
    public IdempotencyHealthResult(IdempotencyHealthStatus status, string description, IReadOnlyDictionary<string, object>? data = null, Exception? exception = null)
    {
        ArgumentNullException.ThrowIfNull(description);
        Status = status;
        Description = description;
        Data = data ?? new Dictionary<string, object>();
        Exception = exception;
    }

    /// <summary>The status.</summary>
    public IdempotencyHealthStatus Status { get; }

    /// <summary>What the status means for requests.</summary>
    public string Description { get; }

    /// <summary>Figures for the report: latencies (<c>…latency_ms</c>), tier states, the last error and when it happened.</summary>
    public IReadOnlyDictionary<string, object> Data { get; }

    /// <summary>The failure behind the status, if any.</summary>
    public Exception? Exception { get; }
}

/// <summary>
/// A store that reports its own health, tier by tier (for example <see cref="TieredIdempotencyStore"/>: degraded while it
/// serves without its cache, unhealthy when its durable store cannot answer). A store that does not implement it is
/// probed with <see cref="IdempotencyStoreHealth.ProbeAsync"/>. Idem.AspNetCore turns either into an <c>IHealthCheck</c>.
/// </summary>
public interface IIdempotencyHealthReporter
{
    /// <summary>Probes the store with real reads under <paramref name="timeout"/> each and reports what it found.</summary>
    ValueTask<IdempotencyHealthResult> CheckHealthAsync(TimeSpan timeout, CancellationToken cancellationToken);
}

/// <summary>Health probes for any <see cref="IIdempotencyStore"/>.</summary>
public static class IdempotencyStoreHealth
{
    // A key of the stores' own shape (64 hex digits) that no hash of a real request is expected to produce.
    internal static readonly string ProbeKey = new('0', 64);

    /// <summary>
    /// The store's health: <see cref="IIdempotencyHealthReporter.CheckHealthAsync"/> when the store implements it,
    /// otherwise one read of a key no request uses, timed, under <paramref name="timeout"/>.
    /// </summary>
    /// <param name="store">The store to probe.</param>
    /// <param name="timeout">The deadline of each read; past it the store counts as not answering.</param>
    /// <param name="cancellationToken">The caller's cancellation; surfaces as <see cref="OperationCanceledException"/>.</param>
    public static ValueTask<IdempotencyHealthResult> ProbeAsync(IIdempotencyStore store, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        return store is IIdempotencyHealthReporter reporter
            ? reporter.CheckHealthAsync(timeout, cancellationToken)
            : ProbeReadAsync(store, timeout, cancellationToken);
    }

    private static async ValueTask<IdempotencyHealthResult> ProbeReadAsync(IIdempotencyStore store, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var name = store.GetType().Name;
        var (latency, error) = await TimeAsync(static (s, ct) => s.GetAsync(ProbeKey, ct), store, timeout, cancellationToken).ConfigureAwait(false);
        var data = new Dictionary<string, object> { ["store"] = name, ["latency_ms"] = Math.Round(latency.TotalMilliseconds, 2) };
        if (error is null)
        {
            return new IdempotencyHealthResult(IdempotencyHealthStatus.Healthy, $"{name} answers.", data);
        }

        data["last_error"] = Describe(error);
        return new IdempotencyHealthResult(IdempotencyHealthStatus.Unhealthy, $"{name} does not answer: protected requests get 503.", data, error);
    }

    /// <summary>
    /// Runs one probe call under <paramref name="timeout"/> and returns how long it took and the failure, if any; only the
    /// caller's own cancellation throws.
    /// </summary>
    internal static async ValueTask<(TimeSpan Latency, Exception? Error)> TimeAsync<TTarget, TResult>(
        Func<TTarget, CancellationToken, ValueTask<TResult>> call,
        TTarget target,
        TimeSpan timeout,
        CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        using var deadline = new CallDeadline(timeout, TimeProvider.System, cancellationToken);
        try
        {
            await deadline.Bound(call(target, deadline.Token)).ConfigureAwait(false);
            return (Stopwatch.GetElapsedTime(started), null);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
#pragma warning disable CA1031 // Any failure of a probe is a finding, reported, not thrown.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            var error = ex is TimeoutException or OperationCanceledException
                ? new TimeoutException($"No answer within {timeout.TotalMilliseconds:0} ms.", ex)
                : ex;
            return (Stopwatch.GetElapsedTime(started), error);
        }
    }

    /// <summary>One line for a report: the exception's type and message, never a stack.</summary>
    internal static string Describe(Exception error) => $"{error.GetType().Name}: {error.Message}";
}
