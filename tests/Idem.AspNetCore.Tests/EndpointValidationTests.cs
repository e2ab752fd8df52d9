using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace Idem.AspNetCore.Tests;

/// <summary>Bad endpoint settings stop the application where it is configured, never as a 500 on a first request.</summary>
public sealed class EndpointValidationTests
{
    [Fact]
    public async Task RequireIdempotency_refuses_an_out_of_range_setting_where_the_endpoint_is_declared()
    {
        var ex = await Assert.ThrowsAsync<ArgumentException>(() => TestApp.StartAsync(app =>
            app.MapPost("/orders", () => Results.Ok()).RequireIdempotency(o => o.Retention = TimeSpan.Zero)));

        Assert.Contains("Retention", ex.Message, StringComparison.Ordinal);
        Assert.Equal("configure", ex.ParamName);
    }

    [Theory]
    [InlineData(new string[0], "nothing would be protected")]
    [InlineData(new[] { "POST", "" }, "not an HTTP method name")]
    [InlineData(new[] { "PO ST" }, "'PO ST'")]
    public async Task RequireIdempotency_refuses_a_method_list_that_protects_nothing_or_names_no_method(string[] methods, string expected)
    {
        var ex = await Assert.ThrowsAsync<ArgumentException>(() => TestApp.StartAsync(app =>
            app.MapPost("/orders", () => Results.Ok()).RequireIdempotency(o => o.Methods = methods)));

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Startup_fails_and_names_the_endpoint_when_metadata_added_another_way_is_invalid()
    {
        // Metadata from a custom convention (or a library) bypasses RequireIdempotency's own check.
        var invalid = new CustomMetadata(new IdempotencyEndpointOptions { Lease = TimeSpan.FromMilliseconds(10) });

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => TestApp.StartAsync(app =>
            app.MapPost("/orders", () => Results.Ok()).WithMetadata(invalid).WithDisplayName("create order")));

        Assert.Contains("'create order'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("lease must be at least 1 second", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_app_with_valid_custom_metadata_starts_and_protects_the_endpoint()
    {
        var executions = 0;
        var valid = new CustomMetadata(new IdempotencyEndpointOptions { Lease = TimeSpan.FromSeconds(5) });
        await using var app = await TestApp.StartAsync(a => a.MapPost("/orders", () => Results.Ok(Interlocked.Increment(ref executions))).WithMetadata(valid));

        for (var i = 0; i < 2; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/orders") { Headers = { { "Idempotency-Key", "valid-custom" } } };
            using var response = await app.Client.SendAsync(request);
            Assert.True(response.IsSuccessStatusCode);
        }

        Assert.Equal(1, executions);
    }

    private sealed class CustomMetadata(IdempotencyEndpointOptions options) : IIdempotencyEndpointMetadata
    {
        public IdempotencyEndpointOptions Options { get; } = options;
    }
}
