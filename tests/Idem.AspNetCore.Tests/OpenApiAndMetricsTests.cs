using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Xunit;

namespace Idem.AspNetCore.Tests;

public sealed class OpenApiAndMetricsTests
{
    [Fact]
    public async Task OpenApi_documents_the_key_header_and_problem_responses_on_protected_operations_only()
    {
        await using var app = await TestApp.StartAsync(
            app =>
            {
                app.MapOpenApi();
                app.MapPost("/orders", () => TypedResults.Ok()).RequireIdempotency(o => o.RequireKey = true);
                app.MapPost("/plain", () => TypedResults.Ok());
            },
            services: s => s.AddOpenApi());

        using var document = JsonDocument.Parse(await app.Client.GetStringAsync("/openapi/v1.json"));
        var orders = document.RootElement.GetProperty("paths").GetProperty("/orders").GetProperty("post");
        var header = Assert.Single(orders.GetProperty("parameters").EnumerateArray(), p => p.GetProperty("name").GetString() == "Idempotency-Key");
        Assert.Equal("header", header.GetProperty("in").GetString());
        Assert.True(header.GetProperty("required").GetBoolean());
        foreach (var status in new[] { "400", "409", "422", "503" })
        {
            var response = orders.GetProperty("responses").GetProperty(status);
            Assert.True(response.GetProperty("content").TryGetProperty("application/problem+json", out _), status);
        }

        var plain = document.RootElement.GetProperty("paths").GetProperty("/plain").GetProperty("post");
        Assert.False(plain.TryGetProperty("parameters", out var parameters) && parameters.EnumerateArray().Any(p => p.GetProperty("name").GetString() == "Idempotency-Key"));
    }

    [Fact]
    public async Task Every_outcome_is_counted_once_with_its_tag()
    {
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(app =>
        {
            app.MapPost("/orders", () => TypedResults.Ok(1)).RequireIdempotency();
            app.MapPost("/slow", async () => { entered.TrySetResult(); await release.Task; return TypedResults.Ok(2); })
               .RequireIdempotency(o => o.ConflictBehavior = ConflictBehavior.Reject);
            app.MapPost("/wait", async () => { entered.TrySetResult(); await release.Task; return TypedResults.Ok(3); }).RequireIdempotency();
        });
        using var collector = new MetricCollector<long>(app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), IdempotencyMetrics.MeterName, "idem.requests");

        await Send(app, "/orders", "a", "1");          // executed
        await Send(app, "/orders", "a", "1");          // replayed
        await Send(app, "/orders", "a", "2");          // mismatched
        await Send(app, "/orders", "bad key", "1");    // rejected
        await Send(app, "/orders", null, "1");         // no_key
        var slow = Send(app, "/slow", "s", "1");       // executed
        await entered.Task;
        await Send(app, "/slow", "s", "1");            // conflicted
        release.SetResult();
        await slow;

        var tags = collector.GetMeasurementSnapshot().Select(m => (string)m.Tags[IdempotencyMetrics.OutcomeTag]!).OrderBy(t => t).ToArray();
        Assert.Equal(new[] { "conflicted", "executed", "executed", "mismatched", "no_key", "rejected", "replayed" }, tags);
    }

    private static async Task Send(TestApp app, string path, string? key, string body)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        if (key is not null)
        {
            request.Headers.TryAddWithoutValidation("Idempotency-Key", key);
        }

        using var response = await app.Client.SendAsync(request);
    }
}
