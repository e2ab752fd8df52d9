using Idem;

namespace OpenTelemetry.Metrics
{
    /// <summary>Adds Idem's metrics to an OpenTelemetry meter provider.</summary>
    public static class IdemMeterProviderBuilderExtensions
    {
        /// <summary>
        /// Listens to the <c>Idem</c> meter: <c>idem.requests</c> by <c>idem.outcome</c>, <c>idem.store.errors</c>,
        /// <c>idem.claim.duration</c>, <c>idem.replay.duration</c>, <c>idem.replays.not_retained</c>, and for the tiered
        /// store <c>idem.cache.hits</c>, <c>idem.cache.errors</c> and <c>idem.cache.fallback</c>. The duration histograms
        /// carry their own bucket boundaries (0.5 ms to 10 s) as instrument advice.
        /// </summary>
        /// <param name="builder">The meter provider builder.</param>
        /// <returns>The same builder, for chaining.</returns>
        public static MeterProviderBuilder AddIdemInstrumentation(this MeterProviderBuilder builder)
        {
            ArgumentNullException.ThrowIfNull(builder);
            return builder.AddMeter(IdempotencyMetrics.MeterName);
        }
    }
}

namespace OpenTelemetry.Trace
{
    /// <summary>Adds Idem's traces to an OpenTelemetry tracer provider.</summary>
    public static class IdemTracerProviderBuilderExtensions
    {
        /// <summary>
        /// Listens to the <c>Idem</c> activity source: one <c>idem.execute</c> activity per protected request, tagged
        /// <c>idem.outcome</c>; a replay's activity links to the activity that executed the original request.
        /// </summary>
        /// <param name="builder">The tracer provider builder.</param>
        /// <returns>The same builder, for chaining.</returns>
        public static TracerProviderBuilder AddIdemInstrumentation(this TracerProviderBuilder builder)
        {
            ArgumentNullException.ThrowIfNull(builder);
            return builder.AddSource(IdempotencyDiagnostics.ActivitySourceName);
        }
    }
}
