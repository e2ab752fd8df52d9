using System.Net;
using System.Net.Http.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Idem.Http.Tests;

/// <summary>Per-request keys, opt-out, methods and options of AddIdempotencyKeys(), against a real Idem server.</summary>
public sealed class HandlerTests : IAsyncLifetime
{
    private FaultyIdemServer _server = null!;

    public async Task InitializeAsync() => _server = await FaultyIdemServer.StartAsync();

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private ServiceProvider Provider(Action<Idem.Http.IdempotencyKeyOptions>? configure = null)
    {
        var services = new ServiceCollection();
        services.AddHttpClient("things", c => c.BaseAddress = _server.Address).AddIdempotencyKeys(configure);
        return services.BuildServiceProvider();
    }

    [Fact]
    public async Task A_key_set_per_request_is_sent_and_a_second_request_with_it_is_a_replay()
    {
        await using var provider = Provider();
        var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient("things");
        async Task<HttpResponseMessage> Send()
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "things/ok") { Content = JsonContent.Create(new Thing("a")) };
            request.SetIdempotencyKey("order-42:charge");
            return await client.SendAsync(request);
        }

        using var first = await Send();
        using var second = await Send();

        Assert.False(first.IsIdempotentReplay());
        Assert.True(second.IsIdempotentReplay());
        Assert.Equal("order-42:charge", second.GetIdempotencyKey());
        Assert.Equal(await first.Content.ReadAsStringAsync(), await second.Content.ReadAsStringAsync());
        Assert.Equal(1, _server.Executions);
    }

    [Fact]
    public async Task Each_logical_request_gets_its_own_key_and_executes()
    {
        await using var provider = Provider();
        var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient("things");

        using var a = await client.PostAsJsonAsync("things/ok", new Thing("same"));
        using var b = await client.PostAsJsonAsync("things/ok", new Thing("same"));

        Assert.NotEqual(a.GetIdempotencyKey(), b.GetIdempotencyKey());
        Assert.Equal(2, _server.Executions);
    }

    [Fact]
    public async Task Opted_out_requests_and_unprotected_methods_carry_no_key()
    {
        await using var provider = Provider();
        var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient("things");

        var optedOut = new HttpRequestMessage(HttpMethod.Post, "things/ok") { Content = JsonContent.Create(new Thing("x")) };
        optedOut.DisableIdempotencyKey();
        using var response = await client.SendAsync(optedOut);
        Assert.Null(response.GetIdempotencyKey());
        Assert.False(optedOut.Headers.Contains("Idempotency-Key"));

        Assert.Equal(string.Empty, await client.GetStringAsync("headers"));
        using var put = await client.PutAsJsonAsync("things/ok", new Thing("p"));
        Assert.Null(put.GetIdempotencyKey());
    }

    [Fact]
    public async Task Methods_and_header_name_are_configurable()
    {
        await using var provider = Provider(o => o.Methods.Add(HttpMethod.Put));
        var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient("things");
        var request = new HttpRequestMessage(HttpMethod.Put, "things/ok") { Content = JsonContent.Create(new Thing("p")) };
        request.SetIdempotencyKey("put-1");
        using var first = await client.SendAsync(request);
        var again = new HttpRequestMessage(HttpMethod.Put, "things/ok") { Content = JsonContent.Create(new Thing("p")) };
        again.SetIdempotencyKey("put-1");
        using var second = await client.SendAsync(again);
        Assert.True(second.IsIdempotentReplay());
        Assert.Equal(1, _server.Executions);

        await using var other = Provider(o => o.HeaderName = "X-Other-Key");
        var otherClient = other.GetRequiredService<IHttpClientFactory>().CreateClient("things");
        var probe = new HttpRequestMessage(HttpMethod.Post, "things/ok") { Content = JsonContent.Create(new Thing("h")) };
        using var probed = await otherClient.SendAsync(probe);
        Assert.True(probe.Headers.Contains("X-Other-Key"));
        Assert.False(probe.Headers.Contains("Idempotency-Key"));
    }

    [Fact]
    public async Task A_key_already_in_the_header_is_kept()
    {
        await using var provider = Provider();
        var client = provider.GetRequiredService<IHttpClientFactory>().CreateClient("things");
        var request = new HttpRequestMessage(HttpMethod.Post, "things/ok") { Content = JsonContent.Create(new Thing("h")) };
        request.Headers.Add("Idempotency-Key", "by-hand");
        using var response = await client.SendAsync(request);
        Assert.Equal("by-hand", response.GetIdempotencyKey());
        Assert.Equal(1, _server.AttemptsOf("by-hand"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("has space")]
    [InlineData("ключ")]
    public void Keys_the_server_would_refuse_are_refused_before_sending(string key)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "things/ok");
        Assert.Throws<ArgumentException>(() => request.SetIdempotencyKey(key));
        Assert.Throws<ArgumentException>(() => request.SetIdempotencyKey(new string('k', 256)));
    }

    [Fact]
    public async Task Invalid_options_fail_when_the_client_is_built()
    {
        await using var provider = Provider(o => o.HeaderName = " ");
        Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IHttpClientFactory>().CreateClient("things"));
    }
}
