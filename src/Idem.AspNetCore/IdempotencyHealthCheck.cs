using System.Globalization;
using System.Text.Json;
using Idem;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Idem.AspNetCore
{
    /// <summary>
    /// The store's health as <see cref="IdempotencyStoreHealth.ProbeAsync"/> reports it (tier by tier for a tiered store),
    /// with the last failure any probe saw, and when, kept across runs: one instance per registration.
    /// </summary>
    internal sealed class IdempotencyStoreHealthCheck(IIdempotencyStore store, TimeProvider timeProvider, TimeSpan timeout) : IHealthCheck
    {
        private string? _lastError;
        private DateTimeOffset _lastErrorAt;

        public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
        {
            var result = await IdempotencyStoreHealth.ProbeAsync(store, timeout, cancellationToken).ConfigureAwait(false);
            var data = new Dictionary<string, object>(result.Data);
            if (result.Exception is { } error)
            {
                _lastError = $"{error.GetType().Name}: {error.Message}";
                _lastErrorAt = timeProvider.GetUtcNow();
            }

            if (_lastError is not null)
            {
                data.TryAdd("last_error", _lastError);
                data.TryAdd("last_error_at", _lastErrorAt.ToString("O", CultureInfo.InvariantCulture));
            }

            var status = result.Status switch
            {
                IdempotencyHealthStatus.Healthy => HealthStatus.Healthy,
                IdempotencyHealthStatus.Degraded => HealthStatus.Degraded,
                _ => context.Registration.FailureStatus,
            };
            return new HealthCheckResult(status, result.Description, result.Exception, data);
        }
    }
}

namespace Microsoft.Extensions.DependencyInjection
{
    /// <summary>Health check registration.</summary>
    public static class IdempotencyHealthChecksBuilderExtensions
    {
        /// <summary>The tag of the checks that <c>MapIdempotencyHealthChecks</c>'s readiness endpoint runs; the store check always has it.</summary>
        public const string ReadyTag = "ready";

        /// <summary>
        /// Adds a check of the idempotency store: healthy when it answers a read within <paramref name="timeout"/>;
        /// for a tiered store, degraded while it serves without its cache and unhealthy when its durable store cannot
        /// answer. The result's data holds each tier's status, latency (ms) and last error. Tagged <see cref="ReadyTag"/>.
        /// </summary>
        /// <param name="builder">The health checks builder.</param>
        /// <param name="name">The check's name in the report.</param>
        /// <param name="tags">More tags; <see cref="ReadyTag"/> is always added.</param>
        /// <param name="timeout">The deadline of each probe read. Default: 5 s.</param>
        public static IHealthChecksBuilder AddIdempotencyStore(this IHealthChecksBuilder builder, string name = "idempotency-store", IEnumerable<string>? tags = null, TimeSpan? timeout = null)
        {
            ArgumentNullException.ThrowIfNull(builder);
            var deadline = timeout ?? TimeSpan.FromSeconds(5);
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(deadline, TimeSpan.Zero, nameof(timeout));
            Idem.AspNetCore.IdempotencyStoreHealthCheck? instance = null;
            return builder.Add(new HealthCheckRegistration(
                name,
                sp => instance ??= new Idem.AspNetCore.IdempotencyStoreHealthCheck(
                    sp.GetRequiredService<Idem.IIdempotencyStore>(), sp.GetService<TimeProvider>() ?? TimeProvider.System, deadline),
                HealthStatus.Unhealthy,
                (tags ?? []).Append(ReadyTag).Distinct(StringComparer.Ordinal)));
        }
    }
}

namespace Microsoft.AspNetCore.Builder
{
    /// <summary>Health endpoints the way Kubernetes probes expect them.</summary>
    public static class IdempotencyHealthEndpointRouteBuilderExtensions
    {
        /// <summary>
        /// Maps <paramref name="pattern"/> (every check, as a JSON report), <c>{pattern}/live</c> (liveness: the process
        /// answers; no check runs, so a store outage never restarts the pod) and <c>{pattern}/ready</c> (readiness: the
        /// checks tagged <c>ready</c>, the store among them, also as JSON). Healthy and degraded answer 200, unhealthy 503.
        /// </summary>
        /// <param name="endpoints">The app.</param>
        /// <param name="pattern">Where the report is served.</param>
        /// <returns>The group of the three endpoints, for conventions such as <c>RequireHost</c>.</returns>
        public static RouteGroupBuilder MapIdempotencyHealthChecks(this IEndpointRouteBuilder endpoints, string pattern = "/healthz")
        {
            ArgumentNullException.ThrowIfNull(endpoints);
            var group = endpoints.MapGroup(pattern);
            group.MapHealthChecks(string.Empty, new HealthCheckOptions { ResponseWriter = WriteJsonReportAsync });
            group.MapHealthChecks("/live", new HealthCheckOptions { Predicate = static _ => false, ResponseWriter = WriteJsonReportAsync });
            group.MapHealthChecks("/ready", new HealthCheckOptions
            {
                Predicate = static r => r.Tags.Contains(Microsoft.Extensions.DependencyInjection.IdempotencyHealthChecksBuilderExtensions.ReadyTag),
                ResponseWriter = WriteJsonReportAsync,
            });
            return group;
        }

        // The report as JSON: status, totalDurationMs and per check its status, description, durationMs, error (type and
        // message, no stack), tags and data. The shape of HealthCheckOptions.ResponseWriter.
        private static async Task WriteJsonReportAsync(HttpContext context, HealthReport report)
        {
            ArgumentNullException.ThrowIfNull(context);
            ArgumentNullException.ThrowIfNull(report);
            context.Response.ContentType = "application/json; charset=utf-8";
            context.Response.Headers.CacheControl = "no-store";
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
            {
                json.WriteStartObject();
                json.WriteString("status", report.Status.ToString());
                json.WriteNumber("totalDurationMs", Math.Round(report.TotalDuration.TotalMilliseconds, 2));
                json.WriteStartObject("checks");
                foreach (var (name, entry) in report.Entries)
                {
                    json.WriteStartObject(name);
                    json.WriteString("status", entry.Status.ToString());
                    json.WriteString("description", entry.Description);
                    json.WriteNumber("durationMs", Math.Round(entry.Duration.TotalMilliseconds, 2));
                    if (entry.Exception is { } error)
                    {
                        json.WriteString("error", $"{error.GetType().Name}: {error.Message}");
                    }

                    json.WriteStartArray("tags");
                    foreach (var tag in entry.Tags)
                    {
                        json.WriteStringValue(tag);
                    }

                    json.WriteEndArray();
                    json.WriteStartObject("data");
                    foreach (var (key, value) in entry.Data)
                    {
                        WriteValue(json, key, value);
                    }

                    json.WriteEndObject();
                    json.WriteEndObject();
                }

                json.WriteEndObject();
                json.WriteEndObject();
            }

            await context.Response.Body.WriteAsync(buffer.GetBuffer().AsMemory(0, (int)buffer.Length), context.RequestAborted).ConfigureAwait(false);
        }

        private static void WriteValue(Utf8JsonWriter json, string key, object? value)
        {
            switch (value)
            {
                case null:
                    json.WriteNull(key);
                    break;
                case bool b:
                    json.WriteBoolean(key, b);
                    break;
                case int i:
                    json.WriteNumber(key, i);
                    break;
                case long l:
                    json.WriteNumber(key, l);
                    break;
                case double d:
                    json.WriteNumber(key, d);
                    break;
                case DateTimeOffset t:
                    json.WriteString(key, t.ToString("O", CultureInfo.InvariantCulture));
                    break;
                default:
                    json.WriteString(key, Convert.ToString(value, CultureInfo.InvariantCulture));
                    break;
            }
        }
    }
}
