using System.Net;

namespace Idem.Gateway.FunctionalTests;

/// <summary>
/// An upstream that breaks the connection: whatever the client of the gateway saw, nothing incomplete is stored, so the
/// retry with the same key executes again, and the gateway keeps serving.
/// </summary>
public sealed class UpstreamFailureTests
{
    [Fact]
    public async Task A_response_cut_short_after_its_201_status_is_not_stored_and_the_retry_executes_again()
    {
        await using var upstream = new RawUpstream(n => n == 1 ? RawReply.Truncated : RawReply.Complete);
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        var key = Http.NewKey();

        // The client reads the whole body (the default): it must not end up with a complete 201.
        HttpResponseMessage? cut = null;
        var failure = await Record.ExceptionAsync(async () => cut = await gateway.Client.SendAsync(Http.Post("/orders", key)));
        var retry = await gateway.Client.SendAsync(Http.Post("/orders", key));
        var replay = await gateway.Client.SendAsync(Http.Post("/orders", key));

        Assert.True(failure is HttpRequestException or IOException, $"the client got a whole response: {cut?.StatusCode} {failure}");
        Assert.Equal(HttpStatusCode.Created, retry.StatusCode);
        Assert.False(Http.Replayed(retry)); // nothing was stored for the cut response
        Assert.Contains("\"execution\":2", await retry.Content.ReadAsStringAsync());
        Assert.True(Http.Replayed(replay)); // the complete one was
        Assert.Equal(await retry.Content.ReadAsByteArrayAsync(), await replay.Content.ReadAsByteArrayAsync());
        Assert.Equal(2, upstream.Requests);
        Assert.Equal(HttpStatusCode.OK, (await gateway.Client.GetAsync("/healthz")).StatusCode);
    }

    [Fact]
    public async Task An_upstream_that_resets_before_its_headers_gets_a_502_and_the_retry_executes_again()
    {
        await using var upstream = new RawUpstream(n => n == 1 ? RawReply.Reset : RawReply.Complete);
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        var key = Http.NewKey();

        var reset = await gateway.Client.SendAsync(Http.Post("/orders", key));
        var retry = await gateway.Client.SendAsync(Http.Post("/orders", key));

        Assert.Equal(HttpStatusCode.BadGateway, reset.StatusCode);
        Assert.Equal("application/problem+json", reset.Content.Headers.ContentType?.MediaType);
        Assert.Contains("a retry with the same key runs the request again", await reset.Content.ReadAsStringAsync());
        Assert.False(Http.Replayed(reset));
        Assert.Equal(HttpStatusCode.Created, retry.StatusCode);
        Assert.False(Http.Replayed(retry));
        Assert.Contains("\"execution\":2", await retry.Content.ReadAsStringAsync());
        Assert.Equal(2, upstream.Requests);
        Assert.Equal(HttpStatusCode.OK, (await gateway.Client.GetAsync("/healthz")).StatusCode);
    }
}
