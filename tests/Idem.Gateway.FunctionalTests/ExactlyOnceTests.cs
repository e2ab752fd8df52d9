using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.Http.Resilience;
using Polly;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Idem.Gateway.FunctionalTests;

/// <summary>Exactly-once through the gateway, in front of an ASP.NET upstream and a third-party Express upstream.</summary>
public sealed class ExactlyOnceTests
{
    [Fact]
    public async Task Storm_of_200_same_key_posts_executes_the_aspnet_upstream_once_and_every_caller_gets_the_same_body()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        var key = Http.NewKey();

        var responses = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => gateway.Client.SendAsync(Http.Post("/orders?delayMs=300", key))));
        var bodies = await Task.WhenAll(responses.Select(r => r.Content.ReadAsStringAsync()));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        Assert.Single(bodies.Distinct());
        Assert.Equal(1, upstream.Started("orders"));
        Assert.Equal(199, responses.Count(Http.Replayed));
        Assert.All(responses, r => Assert.Equal("/orders/1", r.Headers.Location?.OriginalString));
    }

    [Fact]
    public async Task Storm_of_200_same_key_posts_executes_the_express_upstream_once_and_every_caller_gets_the_same_body()
    {
        await using var upstream = await NodeUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        var key = Http.NewKey();

        var responses = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => gateway.Client.SendAsync(Http.Post("/orders?delayMs=300", key))));
        var bodies = await Task.WhenAll(responses.Select(r => r.Content.ReadAsStringAsync()));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        Assert.Single(bodies.Distinct());
        Assert.Equal((1, 1, 0), await upstream.CountsAsync("orders"));
    }

    [Fact]
    public async Task Upstream_5xx_releases_the_key_so_the_retry_executes_again_and_is_then_stored()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        var key = Http.NewKey();

        var first = await gateway.Client.SendAsync(Http.Post("/pay?failFirst=1", key));
        var second = await gateway.Client.SendAsync(Http.Post("/pay?failFirst=1", key));
        var third = await gateway.Client.SendAsync(Http.Post("/pay?failFirst=1", key));

        Assert.Equal(HttpStatusCode.InternalServerError, first.StatusCode);
        Assert.Equal(HttpStatusCode.Created, second.StatusCode);
        Assert.False(Http.Replayed(second));
        Assert.Equal(HttpStatusCode.Created, third.StatusCode);
        Assert.True(Http.Replayed(third));
        Assert.Equal(await second.Content.ReadAsStringAsync(), await third.Content.ReadAsStringAsync());
        Assert.Equal(2, upstream.Started("pay"));
    }

    [Fact]
    public async Task Express_upstream_5xx_releases_the_key_so_the_retry_executes_again()
    {
        await using var upstream = await NodeUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        var key = Http.NewKey();

        var first = await gateway.Client.SendAsync(Http.Post("/pay?failFirst=1", key));
        var second = await gateway.Client.SendAsync(Http.Post("/pay?failFirst=1", key));

        Assert.Equal(HttpStatusCode.InternalServerError, first.StatusCode);
        Assert.Equal(HttpStatusCode.Created, second.StatusCode);
        Assert.Equal(2, (await upstream.CountsAsync("pay")).Started);
    }

    [Fact]
    public async Task Resilience_client_that_times_out_and_retries_with_the_same_key_gets_the_one_execution_stored_response()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);

        // Microsoft.Extensions.Http.Resilience: 700 ms per attempt against an API that takes 2.5 s, retries on timeouts.
        var attempts = 0;
        var pipeline = new ResiliencePipelineBuilder<HttpResponseMessage>()
            .AddRetry(new HttpRetryStrategyOptions
            {
                MaxRetryAttempts = 8,
                Delay = TimeSpan.FromMilliseconds(200),
                BackoffType = DelayBackoffType.Constant,
                UseJitter = false,
                OnRetry = _ =>
                {
                    Interlocked.Increment(ref attempts);
                    return ValueTask.CompletedTask;
                },
            })
            .AddTimeout(TimeSpan.FromMilliseconds(700))
            .Build();
#pragma warning disable EXTEXP0001 // ResilienceHandler is the supported way to put a pipeline on an HttpClient without DI.
        using var client = new HttpClient(new ResilienceHandler(pipeline) { InnerHandler = new SocketsHttpHandler() }) { BaseAddress = gateway.Address };
#pragma warning restore EXTEXP0001
        var key = Http.NewKey();

        using var response = await client.SendAsync(Http.Post("/slow?delayMs=2500", key));
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.True(Http.Replayed(response));
        Assert.True(attempts >= 2, $"expected the client to time out and retry, saw {attempts} retries");
        Assert.Equal(1, body.GetProperty("execution").GetInt32());
        Assert.Equal(1, upstream.Started("slow"));
        Assert.Equal(1, upstream.Completed("slow"));
        Assert.Equal(0, upstream.Cancelled("slow")); // the client's disconnect did not cancel the upstream call
    }

    [Fact]
    public async Task Axios_retry_client_that_times_out_gets_the_stored_response_and_express_runs_to_completion_once()
    {
        await using var upstream = await NodeUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        var key = Http.NewKey();

        var result = await NodeUpstream.RunClientAsync(new Uri(gateway.Address, "/slow?delayMs=2500"), key, timeoutMs: 700, retries: 8);

        Assert.Equal(201, result.GetProperty("status").GetInt32());
        Assert.Equal("true", result.GetProperty("replayed").GetString());
        Assert.True(result.GetProperty("attempts").GetInt32() >= 2, result.ToString());
        Assert.Contains("ECONNABORTED", result.GetProperty("failures").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(1, result.GetProperty("data").GetProperty("execution").GetInt32());
        Assert.Equal((1, 1, 0), await upstream.CountsAsync("slow")); // started once, completed, never cancelled
    }

    [Fact]
    public async Task Without_the_gateway_the_same_axios_client_duplicates_and_express_abandons_work()
    {
        // The control experiment: the failure mode the gateway exists for, on the same stack.
        await using var upstream = await NodeUpstream.StartAsync();

        var result = await NodeUpstream.RunClientAsync(new Uri(upstream.Address, "/slow?delayMs=1500"), Http.NewKey(), timeoutMs: 700, retries: 2);

        Assert.Equal("ECONNABORTED", result.GetProperty("error").GetString());
        var counts = await upstream.CountsAsync("slow");
        Assert.Equal(3, counts.Started);
    }
}
