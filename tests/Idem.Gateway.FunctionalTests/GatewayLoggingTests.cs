using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit;

namespace Idem.Gateway.FunctionalTests;

/// <summary>The gateway's log lines carry the request's correlation id, the one the client sees and the upstream gets.</summary>
public sealed class GatewayLoggingTests
{
    [Fact]
    public async Task A_store_failure_is_logged_with_the_correlation_id_the_client_got()
    {
        var logs = new CapturingLoggerProvider();
        await using var gateway = await GatewayUnderTest.StartAsync(
            new Uri("http://127.0.0.1:9"), store: new FailingStore(), configure: b => b.Logging.AddProvider(logs));

        var given = Http.Post("/orders", Http.NewKey());
        given.Headers.Add("X-Request-Id", "log-me-123");
        using var withId = await gateway.Client.SendAsync(given);
        using var withoutId = await gateway.Client.SendAsync(Http.Post("/orders", Http.NewKey()));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, withId.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, withoutId.StatusCode);
        var generated = Assert.Single(withoutId.Headers.GetValues("X-Request-Id"));
        Assert.Contains(logs.Entries, e => e.Level >= LogLevel.Warning && e.RequestIds.SequenceEqual(["log-me-123"]));
        Assert.Contains(logs.Entries, e => e.Level >= LogLevel.Warning && e.RequestIds.SequenceEqual([generated]));
    }

    private sealed class FailingStore : IIdempotencyStore
    {
        public ValueTask<ClaimResult> TryClaimAsync(ClaimRequest request, CancellationToken cancellationToken) =>
            ValueTask.FromException<ClaimResult>(new IOException("the store is down"));

        public ValueTask<bool> CompleteAsync(string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask<bool> ReleaseAsync(string key, Guid ownerToken, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask<bool> RenewAsync(string key, Guid ownerToken, TimeSpan lease, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask<IdempotencyRecord?> GetAsync(string key, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask<int> PurgeExpiredAsync(int maxRecords, CancellationToken cancellationToken) => ValueTask.FromResult(0);

        public ValueTask WaitForChangeAsync(string key, Guid observedOwner, TimeSpan timeout, CancellationToken cancellationToken) => throw new NotSupportedException();
    }

    private sealed record Entry(string Category, LogLevel Level, string Message, IReadOnlyList<string> RequestIds);

    /// <summary>Keeps every line with the RequestId values of the scopes around it.</summary>
    private sealed class CapturingLoggerProvider : ILoggerProvider, ISupportExternalScope
    {
        private IExternalScopeProvider _scopes = new LoggerExternalScopeProvider();

        public ConcurrentQueue<Entry> Entries { get; } = new();

        public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

        public void SetScopeProvider(IExternalScopeProvider scopeProvider) => _scopes = scopeProvider;

        public void Dispose()
        {
        }

        private sealed class Logger(CapturingLoggerProvider provider, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => provider._scopes.Push(state);

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                var ids = new List<string>();
                provider._scopes.ForEachScope(
                    static (scope, list) =>
                    {
                        if (scope is IEnumerable<KeyValuePair<string, object?>> pairs)
                        {
                            list.AddRange(pairs.Where(p => p.Key == "RequestId").Select(p => p.Value?.ToString() ?? string.Empty));
                        }
                    },
                    ids);
                provider.Entries.Enqueue(new Entry(category, logLevel, formatter(state, exception), ids));
            }
        }
    }
}
