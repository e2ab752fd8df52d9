using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;

namespace Idem.Cli.Commands.Storm;

/// <summary>How the storm chooses its keys.</summary>
internal enum StormKeyMode
{
    /// <summary>A fresh key per round: every round should execute once.</summary>
    PerRound,

    /// <summary>One key for every round: the whole storm should execute once.</summary>
    Same,

    /// <summary>No key at all: shows what happens without one.</summary>
    None,
}

/// <summary>What to send.</summary>
internal sealed record StormSettings(
    Uri Url,
    HttpMethod Method,
    int Concurrency,
    int Rounds,
    byte[] Body,
    string ContentType,
    IReadOnlyList<KeyValuePair<string, string>> Headers,
    StormKeyMode KeyMode,
    string KeyHeader,
    TimeSpan Timeout);

/// <summary>One request's outcome.</summary>
internal readonly record struct StormResponse(int Status, double LatencyMs, bool Replayed, string? BodyHash, string? Error);

/// <summary>The figures of one round.</summary>
internal sealed record StormRound(
    int Round,
    int Requests,
    int DistinctSuccessBodies,
    bool Duplicate,
    IReadOnlyDictionary<string, int> Statuses,
    int Replays,
    int Errors,
    LatencySummary LatencyMs,
    string? FirstError);

/// <summary>Latency percentiles in milliseconds.</summary>
internal sealed record LatencySummary(double P50, double P95, double P99, double Max)
{
    public static LatencySummary Of(IReadOnlyList<double> values)
    {
        if (values.Count == 0)
        {
            return new LatencySummary(0, 0, 0, 0);
        }

        var sorted = values.Order().ToArray();
        return new LatencySummary(Percentile(sorted, 0.50), Percentile(sorted, 0.95), Percentile(sorted, 0.99), sorted[^1]);
    }

    // Nearest rank: the smallest value with at least p of the values at or below it.
    private static double Percentile(double[] sorted, double p) =>
        Math.Round(sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)], 2);
}

/// <summary>
/// Fires <see cref="StormSettings.Concurrency"/> identical requests at once per round and judges the round by its
/// successful bodies: an API that executed once answers every request with the same bytes (the execution and its
/// byte-exact replays); more than one distinct 2xx body means more than one execution.
/// </summary>
internal sealed class StormRunner(StormSettings settings, HttpMessageHandler handler)
{
    public List<double> AllLatencies { get; } = [];

    public async Task<StormRound> RunRoundAsync(int round, string? key, Action onResponse, CancellationToken cancellationToken)
    {
        using var client = new HttpClient(handler, disposeHandler: false) { Timeout = settings.Timeout };
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var requests = new Task<StormResponse>[settings.Concurrency];
        for (var i = 0; i < requests.Length; i++)
        {
            requests[i] = SendAsync(client, key, gate.Task, onResponse, cancellationToken);
        }

        // Released together, so the requests overlap as a double-click or a retry storm does.
        gate.SetResult();
        var responses = await Task.WhenAll(requests).ConfigureAwait(false);

        var latencies = responses.Where(r => r.Error is null).Select(r => r.LatencyMs).ToList();
        AllLatencies.AddRange(latencies);
        var distinct = responses.Where(r => r.BodyHash is not null).Select(r => r.BodyHash).Distinct(StringComparer.Ordinal).Count();
        var statuses = responses
            .GroupBy(r => r.Error is null ? r.Status.ToString(System.Globalization.CultureInfo.InvariantCulture) : "error")
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        return new StormRound(
            round,
            responses.Length,
            distinct,
            distinct > 1,
            statuses,
            responses.Count(r => r.Replayed),
            responses.Count(r => r.Error is not null),
            LatencySummary.Of(latencies),
            responses.FirstOrDefault(r => r.Error is not null).Error);
    }

    private async Task<StormResponse> SendAsync(HttpClient client, string? key, Task gate, Action onResponse, CancellationToken cancellationToken)
    {
        await gate.ConfigureAwait(false);
        using var request = new HttpRequestMessage(settings.Method, settings.Url);
        if (settings.Method != HttpMethod.Get && settings.Method != HttpMethod.Head)
        {
            request.Content = new ByteArrayContent(settings.Body);
            request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(settings.ContentType);
        }

        foreach (var (name, value) in settings.Headers)
        {
            if (!request.Headers.TryAddWithoutValidation(name, value))
            {
                request.Content?.Headers.TryAddWithoutValidation(name, value);
            }
        }

        if (key is not null)
        {
            request.Headers.TryAddWithoutValidation(settings.KeyHeader, key);
        }

        var started = Stopwatch.GetTimestamp();
        try
        {
            using var response = await client.SendAsync(request, cancellationToken).ConfigureAwait(false);
            var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
            var elapsed = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            var status = (int)response.StatusCode;
            var replayed = response.Headers.TryGetValues("Idempotent-Replayed", out var values) && values.Any(v => v.Equals("true", StringComparison.OrdinalIgnoreCase));
            return new StormResponse(status, elapsed, replayed, status is >= 200 and < 300 ? Convert.ToHexStringLower(SHA256.HashData(body)) : null, null);
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return new StormResponse(0, Stopwatch.GetElapsedTime(started).TotalMilliseconds, false, null, ex.Message);
        }
        finally
        {
            onResponse();
        }
    }

    public static HttpMessageHandler CreateHandler(int concurrency) => new SocketsHttpHandler
    {
        MaxConnectionsPerServer = Math.Max(concurrency, 1),
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        AutomaticDecompression = DecompressionMethods.None,
    };
}
