using System.Diagnostics.Metrics;
using System.Net.Http.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Http.Resilience;

namespace Idem.Http.Tests;

/// <summary>
/// A worker protected by <see cref="IdempotencyExecutor.ExecuteOnceAsync{TResult}"/> calls another Idem-protected
/// service with a key derived from its own (the message id). The message is delivered three times; the first run
/// crashes after the remote call succeeded (so the worker's key is released and the work runs again); the remote
/// call's first attempt loses its answer to a dropped connection. The remote service executes once.
/// </summary>
public sealed class WorkerTests : IAsyncLifetime
{
    private FaultyIdemServer _server = null!;

    public async Task InitializeAsync() => _server = await FaultyIdemServer.StartAsync();

    public async Task DisposeAsync() => await _server.DisposeAsync();

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_worker_run_again_after_a_crash_calls_the_other_service_once(bool derivedKey)
    {
        var services = new ServiceCollection();
        services.AddHttpClient("things", c => c.BaseAddress = _server.Address)
            .AddIdempotencyKeys()
            .AddStandardResilienceHandler(o => o.Retry.Delay = TimeSpan.FromMilliseconds(50));
        await using var provider = services.BuildServiceProvider();
        var http = provider.GetRequiredService<IHttpClientFactory>().CreateClient("things");
        using var meters = new MeterFactory();
        var executor = new IdempotencyExecutor(new InMemoryIdempotencyStore(), new IdempotencyMetrics(meters));

        var messageId = Guid.NewGuid().ToString();
        var runs = 0;
        var replays = 0;
        async Task<Thing> Handle(string id) => await executor.ExecuteOnceAsync(
            scope: "create-thing", key: id, fingerprint: id,
            work: async execution =>
            {
                var run = Interlocked.Increment(ref runs);
                var request = new HttpRequestMessage(HttpMethod.Post, "things/drop") { Content = JsonContent.Create(new Thing(id)) };
                if (derivedKey)
                {
                    request.SetIdempotencyKey($"create-thing:{id}"); // the same on every run of this message
                }

                using var response = await http.SendAsync(request, execution.CancellationToken);
                response.EnsureSuccessStatusCode();
                if (response.IsIdempotentReplay())
                {
                    Interlocked.Increment(ref replays);
                }

                var thing = (await response.Content.ReadFromJsonAsync<Thing>(execution.CancellationToken))!;
                if (run == 1)
                {
                    throw new InvalidOperationException("the worker crashed after the remote call"); // releases the key
                }

                return thing;
            });

        await Assert.ThrowsAsync<InvalidOperationException>(() => Handle(messageId));
        var second = await Handle(messageId);
        var third = await Handle(messageId); // a redelivery after success: replayed by the executor, no remote call

        Assert.Equal(2, runs);
        Assert.Equal(second, third);
        if (derivedKey)
        {
            Assert.Equal(1, _server.Executions);
            Assert.Equal(2, replays); // the first run's retry after the dropped connection, and the second run
        }
        else
        {
            // The naive variant: a generated key per run, so the run after the crash creates a second thing.
            Assert.Equal(2, _server.Executions);
        }
    }

    private sealed class MeterFactory : IMeterFactory
    {
        private readonly List<Meter> _meters = [];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options);
            _meters.Add(meter);
            return meter;
        }

        public void Dispose() => _meters.ForEach(m => m.Dispose());
    }
}
