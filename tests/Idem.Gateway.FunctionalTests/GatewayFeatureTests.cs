using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Idem.AspNetCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Idem.Gateway.FunctionalTests;

/// <summary>Configuration, principals, implicit keys, bodies, correlation ids and operations endpoints.</summary>
public sealed class GatewayFeatureTests
{
    [Fact]
    public async Task Keys_are_scoped_by_a_hash_of_the_authorization_header_and_anonymous_callers_share_one_scope()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        var key = Http.NewKey();

        var alice = await gateway.Client.SendAsync(Http.Post("/orders", key, authorization: "Bearer alice"));
        var aliceAgain = await gateway.Client.SendAsync(Http.Post("/orders", key, authorization: "Bearer alice"));
        var bob = await gateway.Client.SendAsync(Http.Post("/orders", key, authorization: "Bearer bob"));
        var anonymous = await gateway.Client.SendAsync(Http.Post("/orders", key));
        var anonymousAgain = await gateway.Client.SendAsync(Http.Post("/orders", key));

        Assert.True(Http.Replayed(aliceAgain));
        Assert.False(Http.Replayed(bob));
        Assert.False(Http.Replayed(anonymous));
        Assert.True(Http.Replayed(anonymousAgain));
        Assert.Equal(3, upstream.Started("orders"));
        Assert.All(new[] { alice, bob, anonymous }, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
    }

    [Fact]
    public async Task A_configured_cookie_identifies_the_principal_instead_of_the_authorization_header()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address, ["--Idem:Principal:Cookie", "session"]);
        var key = Http.NewKey();

        HttpRequestMessage WithCookie(string session, string authorization)
        {
            var request = Http.Post("/orders", key, authorization: authorization);
            request.Headers.Add("Cookie", $"session={session}");
            return request;
        }

        await gateway.Client.SendAsync(WithCookie("s1", "Bearer a"));
        var sameCookieOtherHeader = await gateway.Client.SendAsync(WithCookie("s1", "Bearer b"));
        var otherCookie = await gateway.Client.SendAsync(WithCookie("s2", "Bearer a"));

        Assert.True(Http.Replayed(sameCookieOtherHeader));
        Assert.False(Http.Replayed(otherCookie));
        Assert.Equal(2, upstream.Started("orders"));
    }

    [Fact]
    public async Task Implicit_keys_are_opt_in_per_route_and_make_a_keyless_double_submit_execute_once()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var plain = await GatewayUnderTest.StartAsync(upstream.Address);
        await using var implicitKeys = await GatewayUnderTest.StartAsync(upstream.Address, ["--Idem:Routes:default:ImplicitKeyWindow", "00:00:10"]);

        await Task.WhenAll(plain.Client.SendAsync(Http.Post("/plain?delayMs=200", key: null)), plain.Client.SendAsync(Http.Post("/plain?delayMs=200", key: null)));
        var clicks = await Task.WhenAll(Enumerable.Range(0, 5).Select(_ => implicitKeys.Client.SendAsync(Http.Post("/chat?delayMs=200", key: null, body: "{\"to\":\"bob\"}"))));
        var otherBody = await implicitKeys.Client.SendAsync(Http.Post("/chat", key: null, body: "{\"to\":\"carol\"}"));

        Assert.Equal(2, upstream.Started("plain"));
        Assert.Single((await Task.WhenAll(clicks.Select(c => c.Content.ReadAsStringAsync()))).Distinct());
        Assert.Equal(HttpStatusCode.Created, otherBody.StatusCode);
        Assert.Equal(2, upstream.Started("chat"));
    }

    [Fact]
    public async Task YARP_routes_from_configuration_carry_their_own_Idem_policies_from_Idem_Routes_and_route_metadata()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        var destination = upstream.Address.ToString().TrimEnd('/');
        await using var gateway = await GatewayUnderTest.StartAsync(upstream: null,
        [
            "--ReverseProxy:Clusters:api:Destinations:one:Address", destination,
            "--ReverseProxy:Routes:payments:ClusterId", "api",
            "--ReverseProxy:Routes:payments:Match:Path", "/payments/{**rest}",
            "--ReverseProxy:Routes:payments:Metadata:Idem.RequireKey", "true",
            "--ReverseProxy:Routes:payments:Metadata:Idem.Methods", "POST,PUT",
            "--ReverseProxy:Routes:reports:ClusterId", "api",
            "--ReverseProxy:Routes:reports:Match:Path", "/reports",
            "--ReverseProxy:Routes:rest:ClusterId", "api",
            "--ReverseProxy:Routes:rest:Match:Path", "{**catch-all}",
            "--Idem:Routes:reports:Enabled", "false",
            "--Idem:Routes:rest:StoredStatuses", "2xx",
            "--Idem:Routes:rest:ConflictBehavior", "Reject",
        ]);

        var noKey = await gateway.Client.SendAsync(Http.Post("/payments/charge", key: null));
        var putKey = Http.NewKey();
        var put1 = await gateway.Client.SendAsync(new HttpRequestMessage(HttpMethod.Put, "/payments/charge") { Headers = { { "Idempotency-Key", putKey } }, Content = JsonContent.Create(new { a = 1 }) });
        var put2 = await gateway.Client.SendAsync(new HttpRequestMessage(HttpMethod.Put, "/payments/charge") { Headers = { { "Idempotency-Key", putKey } }, Content = JsonContent.Create(new { a = 1 }) });
        var reportKey = Http.NewKey();
        await gateway.Client.SendAsync(Http.Post("/reports", reportKey));
        var report2 = await gateway.Client.SendAsync(Http.Post("/reports", reportKey));
        var busyKey = Http.NewKey();
        var slow = gateway.Client.SendAsync(Http.Post("/other?delayMs=1000", busyKey));
        // The upstream sees the request only once the gateway has claimed its key: from then on the key is in flight.
        var claimed = Stopwatch.StartNew();
        while (upstream.Started("other") == 0)
        {
            Assert.True(claimed.Elapsed < TimeSpan.FromSeconds(10), "The slow request never reached the upstream.");
            await Task.Delay(10);
        }

        var rejected = await gateway.Client.SendAsync(Http.Post("/other?delayMs=1000", busyKey));
        await slow;

        Assert.Equal(HttpStatusCode.BadRequest, noKey.StatusCode);
        Assert.Equal("application/problem+json", noKey.Content.Headers.ContentType?.MediaType);
        Assert.True(Http.Replayed(put2));
        Assert.Equal(HttpStatusCode.Created, put1.StatusCode);
        Assert.Equal(1, upstream.Started("charge"));
        Assert.False(Http.Replayed(report2));
        Assert.Equal(2, upstream.Started("reports"));
        Assert.Equal(HttpStatusCode.Conflict, rejected.StatusCode);
        Assert.NotNull(rejected.Headers.RetryAfter);
    }

    [Theory]
    [InlineData("Redis", new string[0], "Idem:Redis:Configuration is empty")]
    [InlineData("Tiered", new[] { "--Idem:Redis:Configuration", "127.0.0.1:1" }, "Idem:PostgreSql:ConnectionString is empty")]
    [InlineData("Tiered", new[] { "--Idem:PostgreSql:ConnectionString", "Host=127.0.0.1;Port=1" }, "Idem:Redis:Configuration is empty")]
    public void Redis_and_tiered_stores_without_their_settings_are_refused_at_startup_instead_of_falling_back(string store, string[] settings, string message)
    {
        var ex = Assert.Throws<InvalidOperationException>(() => GatewayHost.Build(["--upstream", "http://127.0.0.1:1", "--Idem:Store", store, .. settings]));
        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void A_gateway_without_an_upstream_or_routes_says_how_to_configure_one()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => GatewayHost.Build(["--Idem:Store", "InMemory"]));
        Assert.Contains("--upstream", ex.Message);
    }

    [Fact]
    public void Invalid_route_settings_fail_at_startup()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => GatewayHost.Build(["--upstream", "http://127.0.0.1:1", "--Idem:Store", "InMemory", "--Idem:Routes:default:StoredStatuses", "2xx,banana"]));
        Assert.Contains("banana", ex.Message);
    }

    [Fact]
    public async Task Large_bodies_are_buffered_to_a_temp_file_and_forwarded_whole_and_bodies_over_the_limit_get_413()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address, ["--Idem:MaxRequestBodyBytes", "1048576", "--Idem:RequestBufferThreshold", "65536"]);
        var big = new byte[900_000];
        new Random(7).NextBytes(big);
        var key = Http.NewKey();

        HttpRequestMessage Upload(byte[] body, bool chunked)
        {
            var content = chunked ? (HttpContent)new StreamContent(new NonSeekableStream(body)) : new ByteArrayContent(body);
            content.Headers.ContentType = new("application/octet-stream");
            var request = new HttpRequestMessage(HttpMethod.Post, "/upload") { Content = content };
            request.Headers.Add("Idempotency-Key", key);
            return request;
        }

        var first = await gateway.Client.SendAsync(Upload(big, chunked: true));
        var replay = await gateway.Client.SendAsync(Upload(big, chunked: false));
        var tooBig = await gateway.Client.SendAsync(Upload(new byte[1_048_577], chunked: false));
        key = Http.NewKey();
        var tooBigChunked = await gateway.Client.SendAsync(Upload(new byte[1_200_000], chunked: true));

        var body = await first.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(big.Length, body.GetProperty("bodyLength").GetInt32());
        Assert.Equal(Convert.ToHexString(SHA256.HashData(big)), body.GetProperty("bodySha256").GetString());
        Assert.True(Http.Replayed(replay));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooBig.StatusCode);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooBigChunked.StatusCode);
        Assert.Equal(1, upstream.Started("upload"));
    }

    [Fact]
    public async Task The_correlation_id_is_accepted_or_generated_forwarded_upstream_and_echoed()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);

        var withId = Http.Post("/orders", Http.NewKey());
        withId.Headers.Add("X-Request-Id", "client-abc-123");
        var given = await gateway.Client.SendAsync(withId);
        var generated = await gateway.Client.SendAsync(Http.Post("/orders", Http.NewKey()));
        var unprotected = await gateway.Client.GetAsync("/orders");
        var traced = Http.Post("/orders", Http.NewKey());
        traced.Headers.Add("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        var fromTrace = await gateway.Client.SendAsync(traced);

        Assert.Equal("client-abc-123", (await given.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("requestId").GetString());
        Assert.Equal("client-abc-123", Assert.Single(given.Headers.GetValues("X-Request-Id")));
        var generatedId = Assert.Single(generated.Headers.GetValues("X-Request-Id"));
        Assert.False(string.IsNullOrWhiteSpace(generatedId));
        Assert.Equal(generatedId, (await generated.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("requestId").GetString());
        Assert.Single(unprotected.Headers.GetValues("X-Request-Id"));
        Assert.Contains(upstream.RequestIds, id => id == "client-abc-123");
        Assert.Contains(upstream.RequestIds, id => id == generatedId);

        // Without an id of its own, a traced request is known by its trace id, so logs and traces line up.
        Assert.Equal("4bf92f3577b34da6a3ce929d0e0e4736", Assert.Single(fromTrace.Headers.GetValues("X-Request-Id")));
        Assert.Contains(upstream.RequestIds, id => id == "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    [Fact]
    public async Task Healthz_and_Prometheus_metrics_are_served_and_can_move_to_a_management_port()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        await gateway.Client.SendAsync(Http.Post("/orders", Http.NewKey()));

        var health = await gateway.Client.GetAsync("/healthz");
        var metrics = await GetMetricsAsync(gateway.Client, "idem_requests");

        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Contains("idem_requests", metrics);

        var port = FreePort();
        await using var managed = await GatewayUnderTest.StartAsync(upstream.Address, ["--Idem:ManagementUrls", $"http://127.0.0.1:{port}"]);
        using var management = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
        await managed.Client.SendAsync(Http.Post("/orders", Http.NewKey()));

        Assert.Contains("idem_requests", await GetMetricsAsync(management, "idem_requests"));
        Assert.Equal(HttpStatusCode.OK, (await management.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await management.PostAsync("/orders", null)).StatusCode);
        var apiMetrics = await managed.Client.GetAsync("/metrics"); // the main port's /metrics belongs to the API again
        Assert.DoesNotContain("idem_requests", await apiMetrics.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Health_reports_the_store_it_uses()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);

        Assert.IsType<InMemoryIdempotencyStore>(gateway.Services.GetRequiredService<IIdempotencyStore>());
        Assert.NotNull(gateway.Services.GetRequiredService<IOptions<IdempotencyOptions>>().Value.PrincipalResolver);
    }

    private static async Task<string> GetMetricsAsync(HttpClient client, string expected)
    {
        // The exporter caches a scrape briefly and the SDK collects on demand; a couple of reads see the first request.
        var text = string.Empty;
        for (var i = 0; i < 20 && !text.Contains(expected, StringComparison.Ordinal); i++)
        {
            text = await client.GetStringAsync("/metrics");
            if (!text.Contains(expected, StringComparison.Ordinal))
            {
                await Task.Delay(250);
            }
        }

        return text;
    }

    internal static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private sealed class NonSeekableStream(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;
    }
}
