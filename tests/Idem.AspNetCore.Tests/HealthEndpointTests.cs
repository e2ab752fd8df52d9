using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Idem.AspNetCore.Tests;

/// <summary><c>MapIdempotencyHealthChecks</c>: the JSON report, liveness and readiness, against a store that answers and one that cannot.</summary>
public sealed class HealthEndpointTests
{
    private static void MapHealth(WebApplication app) => app.MapIdempotencyHealthChecks("/healthz");

    private static void AddHealth(IServiceCollection services) => services.AddHealthChecks().AddIdempotencyStore(timeout: TimeSpan.FromSeconds(10));

    [Fact]
    public async Task A_store_that_answers_is_healthy_with_its_latency_and_every_endpoint_answers_200()
    {
        await using var app = await TestApp.StartAsync(MapHealth, services: AddHealth);

        var (status, report) = await GetAsync(app, "/healthz");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("Healthy", report.GetProperty("status").GetString());
        var check = report.GetProperty("checks").GetProperty("idempotency-store");
        Assert.Equal("Healthy", check.GetProperty("status").GetString());
        Assert.Equal("InMemoryIdempotencyStore", check.GetProperty("data").GetProperty("store").GetString());
        Assert.True(check.GetProperty("data").GetProperty("latency_ms").GetDouble() >= 0);
        Assert.Contains("ready", check.GetProperty("tags").EnumerateArray().Select(t => t.GetString()));

        Assert.Equal(HttpStatusCode.OK, (await GetAsync(app, "/healthz/ready")).Status);
        var (liveStatus, live) = await GetAsync(app, "/healthz/live");
        Assert.Equal(HttpStatusCode.OK, liveStatus);
        Assert.Empty(live.GetProperty("checks").EnumerateObject());
    }

    [Fact]
    public async Task A_store_that_cannot_answer_is_unhealthy_not_ready_but_live()
    {
        // A real PostgreSQL connection to a port nothing listens on: refused at once.
        var connectionString = $"Host=127.0.0.1;Port={ClosedPort()};Username=idem;Database=idem;Timeout=3";
        await using var app = await TestApp.StartAsync(
            MapHealth,
            store: b => b.UsePostgreSqlStore(connectionString, o => o.CreateSchemaAutomatically = false),
            services: AddHealth);

        var (status, report) = await GetAsync(app, "/healthz");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        var check = report.GetProperty("checks").GetProperty("idempotency-store");
        Assert.Equal("Unhealthy", check.GetProperty("status").GetString());
        Assert.Contains("does not answer", check.GetProperty("description").GetString());
        Assert.False(string.IsNullOrEmpty(check.GetProperty("error").GetString()));
        Assert.False(string.IsNullOrEmpty(check.GetProperty("data").GetProperty("last_error").GetString()));
        Assert.True(check.GetProperty("data").TryGetProperty("last_error_at", out _));
        Assert.DoesNotContain("Username=idem", report.ToString()); // no connection string in the report

        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await GetAsync(app, "/healthz/ready")).Status);
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(app, "/healthz/live")).Status);
    }

    private static async Task<(HttpStatusCode Status, JsonElement Report)> GetAsync(TestApp app, string path)
    {
        using var response = await app.Client.GetAsync(path);
        Assert.Equal("application/json; charset=utf-8", response.Content.Headers.ContentType?.ToString());
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return (response.StatusCode, json.RootElement.Clone());
    }

    private static int ClosedPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
