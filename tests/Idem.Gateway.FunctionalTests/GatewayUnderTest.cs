using System.Net;
using Idem.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;

namespace Idem.Gateway.FunctionalTests;

/// <summary>Idem Gateway started in-process through <see cref="GatewayHost.Build"/> on a free loopback port.</summary>
public sealed class GatewayUnderTest : IAsyncDisposable
{
    private readonly WebApplication _app;
    private bool _stopped;

    private GatewayUnderTest(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
        Client = CreateClient();
    }

    public Uri Address { get; }

    public HttpClient Client { get; }

    public IServiceProvider Services => _app.Services;

    /// <summary>Starts a gateway; the store is in memory unless <paramref name="store"/> supplies one or the args choose another.</summary>
    public static async Task<GatewayUnderTest> StartAsync(Uri? upstream, IEnumerable<string>? args = null, IIdempotencyStore? store = null, Action<WebApplicationBuilder>? configure = null)
    {
        var all = new List<string> { "--urls", "http://127.0.0.1:0", "--Idem:Store", "InMemory", "--Idem:Default:WaitTimeout", "00:01:00" };
        if (upstream is not null)
        {
            all.AddRange(["--upstream", upstream.ToString().TrimEnd('/')]);
        }

        all.AddRange(args ?? []);
        var app = GatewayHost.Build([.. all], builder =>
        {
            builder.Logging.ClearProviders();
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
            if (store is not null)
            {
                builder.Services.RemoveAll<IIdempotencyStore>();
                builder.Services.AddSingleton(store);
            }

            configure?.Invoke(builder);
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new GatewayUnderTest(app, new Uri(address));
    }

    public HttpClient CreateClient(TimeSpan? timeout = null) => new(new SocketsHttpHandler { MaxConnectionsPerServer = 1000 })
    {
        BaseAddress = Address,
        Timeout = timeout ?? TimeSpan.FromSeconds(60),
    };

    public async Task StopAsync()
    {
        if (!_stopped)
        {
            _stopped = true;
            await _app.StopAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await StopAsync();
        await _app.DisposeAsync();
    }
}

internal static class Http
{
    public static HttpRequestMessage Post(string path, string? key, string body = "{\"amount\":42}", string? authorization = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json") };
        if (key is not null)
        {
            request.Headers.TryAddWithoutValidation("Idempotency-Key", key);
        }

        if (authorization is not null)
        {
            request.Headers.TryAddWithoutValidation("Authorization", authorization);
        }

        return request;
    }

    public static string NewKey() => Guid.NewGuid().ToString();

    public static bool Replayed(HttpResponseMessage response) =>
        response.Headers.TryGetValues("Idempotent-Replayed", out var values) && values.Contains("true");

    /// <summary>The first response was an execution (201), the second its replay, byte for byte.</summary>
    public static async Task AssertReplayOfAsync(HttpResponseMessage executed, HttpResponseMessage replayed)
    {
        Assert.Equal(HttpStatusCode.Created, executed.StatusCode);
        Assert.False(Replayed(executed));
        Assert.Equal(HttpStatusCode.Created, replayed.StatusCode);
        Assert.True(Replayed(replayed));
        Assert.Equal(await executed.Content.ReadAsByteArrayAsync(), await replayed.Content.ReadAsByteArrayAsync());
    }
}
