using Idem;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Idem.AspNetCore
{
    /// <summary>Healthy when the store answers a read within its deadline.</summary>
    internal sealed class IdempotencyStoreHealthCheck(IIdempotencyStore store) : IHealthCheck
    {
        private static readonly string ProbeKey = new('0', 64);

        public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(TimeSpan.FromSeconds(5));
            try
            {
                await store.GetAsync(ProbeKey, deadline.Token).ConfigureAwait(false);
                return HealthCheckResult.Healthy($"{store.GetType().Name} answers.");
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
            {
                return new HealthCheckResult(context.Registration.FailureStatus, $"{store.GetType().Name} does not answer: protected requests get 503.", ex);
            }
        }
    }
}

namespace Microsoft.Extensions.DependencyInjection
{
    /// <summary>Health check registration.</summary>
    public static class IdempotencyHealthChecksBuilderExtensions
    {
        /// <summary>Adds a check that the idempotency store answers.</summary>
        public static IHealthChecksBuilder AddIdempotencyStore(this IHealthChecksBuilder builder, string name = "idempotency-store", IEnumerable<string>? tags = null)
        {
            ArgumentNullException.ThrowIfNull(builder);
            return builder.AddCheck<Idem.AspNetCore.IdempotencyStoreHealthCheck>(name, HealthStatus.Unhealthy, tags ?? []);
        }
    }
}
