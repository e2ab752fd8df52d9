using System.Net;
using System.Net.Http.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Http.Resilience;

namespace Idem.Http.Tests;

/// <summary>
/// AddIdempotencyKeys() under the standard resilience handler, against a real Idem server that drops connections
/// after the handler ran and runs handlers past the attempt timeout: N logical calls, N executions. The naive
/// variant (a handler inside the retry loop making a new key per attempt) runs every attempt again.
/// </summary>
public sealed class ResilienceTests : IAsyncLifetime
{
    private const int N = 8;
    private FaultyIdemServer _server = null!;

    public async Task InitializeAsync() => _server = await FaultyIdemServer.StartAsync();

    public async Task DisposeAsync() => await _server.DisposeAsync();

    public enum Registration
    {
        KeysThenResilience,
        ResilienceThenKeys,
        NaiveKeyPerAttempt,
    }

    [Theory]
    [InlineData("drop", Registration.KeysThenResilience)]
    [InlineData("drop", Registration.ResilienceThenKeys)]
    [InlineData("slow", Registration.KeysThenResilience)]
    [InlineData("slow", Registration.ResilienceThenKeys)]
    public async Task N_logical_calls_through_dropped_connections_and_timeouts_execute_N_times(string fault, Registration registration)
    {
        await using var services = Services(registration);
        var client = services.GetRequiredService<IHttpClientFactory>().CreateClient("things");

        var responses = await Task.WhenAll(Enumerable.Range(0, N).Select(i =>
            client.PostAsJsonAsync($"things/{fault}", new Thing($"thing-{i}"))));

        Assert.Equal(N, _server.Executions);
        Assert.True(_server.Requests > N, "the faults made the pipeline retry");
        var numbers = new HashSet<int>();
        for (var i = 0; i < N; i++)
        {
            using var response = responses[i];
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
            Assert.True(response.IsIdempotentReplay(), "the answer came from the stored response of the first attempt");
            Assert.False(string.IsNullOrEmpty(response.GetRequestId()));
            var key = response.GetIdempotencyKey();
            Assert.NotNull(key);
            Assert.True(_server.AttemptsOf(key) >= 2, "several attempts carried this one key");
            var thing = await response.Content.ReadFromJsonAsync<Thing>();
            Assert.Equal($"thing-{i}", thing!.Name);
            numbers.Add(thing.Number);
        }

        Assert.Equal(N, numbers.Count);
    }

    [Theory]
    [InlineData("drop")]
    [InlineData("slow")]
    public async Task Naive_handler_inside_the_retry_loop_with_a_new_key_per_attempt_executes_every_attempt(string fault)
    {
        await using var services = Services(Registration.NaiveKeyPerAttempt);
        var client = services.GetRequiredService<IHttpClientFactory>().CreateClient("things");

        var calls = await Task.WhenAll(Enumerable.Range(0, N).Select(async i =>
        {
            try
            {
                using var response = await client.PostAsJsonAsync($"things/{fault}", new Thing($"thing-{i}"));
                return response.StatusCode;
            }
            catch (Exception ex) when (ex is HttpRequestException or TimeoutException or OperationCanceledException or Polly.Timeout.TimeoutRejectedException)
            {
                return (HttpStatusCode)0;
            }
        }));

        // Every attempt had a key the server had never seen, so each one that reached the handler ran it again (and met
        // the fault again): more executions than logical calls, where the registrations above give exactly N. On a
        // loaded box an attempt may be given up before its body reaches the server (it then runs nothing) or reach the
        // handler after the client gave up on it, so the exact count is N × attempts only on a quiet one: wait
        // (bounded) for the late ones, then claim only what holds on any box.
        var attempts = N * (MaxRetries + 1);
        for (var i = 0; i < 100 && _server.Executions < attempts; i++)
        {
            await Task.Delay(50);
        }

        Assert.True(_server.Executions > N, $"{_server.Executions} executions for {N} logical calls ({_server.Requests} requests)");
        Assert.All(calls, status => Assert.Equal((HttpStatusCode)0, status));
    }

    [Fact]
    public async Task Hedged_attempts_of_one_call_carry_one_key_and_execute_once()
    {
        var services = new ServiceCollection();
        services.AddHttpClient("things", c => c.BaseAddress = _server.Address)
            .AddIdempotencyKeys()
            .AddStandardHedgingHandler().Configure(o =>
            {
                o.Hedging.Delay = TimeSpan.FromMilliseconds(200);
                o.Hedging.MaxHedgedAttempts = 2;
            });
        await using var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient("things");

        var responses = await Task.WhenAll(Enumerable.Range(0, N).Select(i => client.PostAsJsonAsync("things/slow", new Thing($"thing-{i}"))));

        Assert.Equal(N, _server.Executions);
        Assert.True(_server.Requests > N, "the slow first attempts were hedged");
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        foreach (var r in responses)
        {
            r.Dispose();
        }
    }

    private const int MaxRetries = 3;

    private ServiceProvider Services(Registration registration)
    {
        var services = new ServiceCollection();
        var client = services.AddHttpClient("things", c => c.BaseAddress = _server.Address);
        void Resilience() => client.AddStandardResilienceHandler(o =>
        {
            o.Retry.MaxRetryAttempts = MaxRetries;
            o.Retry.Delay = TimeSpan.FromMilliseconds(50);
            o.AttemptTimeout.Timeout = TimeSpan.FromMilliseconds(500);
            o.TotalRequestTimeout.Timeout = TimeSpan.FromSeconds(30);
        });
        switch (registration)
        {
            case Registration.KeysThenResilience:
                client.AddIdempotencyKeys();
                Resilience();
                break;
            case Registration.ResilienceThenKeys:
                Resilience();
                client.AddIdempotencyKeys();
                break;
            case Registration.NaiveKeyPerAttempt:
                Resilience();
                client.AddHttpMessageHandler(() => new NewKeyPerAttemptHandler());
                break;
        }

        return services.BuildServiceProvider();
    }

    /// <summary>What hand-written clients often do: a fresh key on every send, placed where the retry loop calls it.</summary>
    private sealed class NewKeyPerAttemptHandler : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.Remove("Idempotency-Key");
            request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
            return base.SendAsync(request, cancellationToken);
        }
    }
}
