using System.Reflection;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Xunit;

namespace Idem.AspNetCore.Tests;

/// <summary>
/// One policy shape: <see cref="IdempotencyEndpointOptions"/> is set in code, bound from configuration (the gateway's
/// routes) and merged by <see cref="IdempotencyEndpointOptions.Overlay"/> alone. A new setting is a property plus its
/// Overlay line; these tests fail when either is forgotten or the property cannot be bound.
/// </summary>
public sealed class EndpointOptionsShapeTests
{
    private static readonly PropertyInfo[] Settings = typeof(IdempotencyEndpointOptions)
        .GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Where(p => p.CanWrite)
        .ToArray();

    [Fact]
    public void Overlay_carries_every_setting_from_either_layer()
    {
        var set = Sample();
        var empty = new IdempotencyEndpointOptions();
        Assert.All(Settings.Where(p => p.Name != nameof(IdempotencyEndpointOptions.StoredStatuses)), p => Assert.NotNull(p.GetValue(set))); // a new setting joins Sample()

        foreach (var (name, merged) in new[] { ("over empty", empty.Overlay(set)), ("under empty", set.Overlay(empty)) })
        {
            foreach (var setting in Settings.Where(p => p.Name != nameof(IdempotencyEndpointOptions.StoredStatuses)))
            {
                Assert.True(Equals(setting.GetValue(set), setting.GetValue(merged)), $"{setting.Name} is lost by Overlay ({name}).");
            }
        }

        Assert.Equal("2xx", empty.Overlay(new IdempotencyEndpointOptions { StoredStatuses = "2xx" }).StoredStatuses);
    }

    [Fact]
    public void Overlay_lets_either_form_of_the_stored_statuses_replace_the_other()
    {
        var lower = new IdempotencyEndpointOptions { ShouldStore = static s => s == 201 };

        var merged = lower.Overlay(new IdempotencyEndpointOptions { StoredStatuses = "2xx" });

        Assert.Null(merged.ShouldStore);
        Assert.Equal("2xx", merged.StoredStatuses);
        merged.Validate();
    }

    [Fact]
    public void Every_setting_but_the_delegate_binds_from_configuration()
    {
        var values = new Dictionary<string, string?>
        {
            ["Enabled"] = "false",
            ["RequireKey"] = "true",
            ["Methods:0"] = "PUT",
            ["ConflictBehavior"] = "Reject",
            ["Retention"] = "01:00:00",
            ["Lease"] = "00:00:20",
            ["WaitTimeout"] = "00:00:05",
            ["ExecutionTimeout"] = "00:01:00",
            ["StoredStatuses"] = "2xx,404",
            ["MaxStoredBodyBytes"] = "1000",
            ["StoreFailureMode"] = "FailOpen",
            ["ImplicitKeyWindow"] = "00:00:10",
            ["JoinedTransaction"] = "false", // true would be refused beside FailOpen; bound either way
        };

        var bound = new ConfigurationBuilder().AddInMemoryCollection(values).Build()
            .Get<IdempotencyEndpointOptions>(o => o.ErrorOnUnknownConfiguration = true)!;

        var unbound = Settings.Where(p => p.GetValue(bound) is null).Select(p => p.Name).ToArray();
        Assert.Equal([nameof(IdempotencyEndpointOptions.ShouldStore)], unbound);
        Assert.Equal(["PUT"], bound.Methods!);
        bound.Validate();
    }

    [Theory]
    [InlineData("2xx,banana", "banana")]
    [InlineData("600", "'600'")]
    public void Unparsable_stored_statuses_are_refused_naming_the_token(string statuses, string expected)
    {
        var ex = Assert.Throws<ArgumentException>(() => new IdempotencyEndpointOptions { StoredStatuses = statuses }.Validate());

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Both_forms_of_the_stored_statuses_at_once_are_refused()
    {
        var ex = Assert.Throws<ArgumentException>(() => new IdempotencyEndpointOptions { StoredStatuses = "2xx", ShouldStore = static _ => true }.Validate());

        Assert.Contains("not both", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_disabled_endpoint_passes_through_while_the_same_endpoint_enabled_replays()
    {
        var disabled = new Counter();
        var enabled = new Counter();
        await using var app = await TestApp.StartAsync(a =>
        {
            a.MapPost("/disabled", () => TypedResults.Ok(disabled.Increment())).RequireIdempotency(o => o.Enabled = false);
            a.MapPost("/enabled", () => TypedResults.Ok(enabled.Increment())).RequireIdempotency(o => o.Enabled = true);
        });

        foreach (var path in new[] { "/disabled", "/disabled", "/enabled", "/enabled" })
        {
            var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
            request.Headers.Add("Idempotency-Key", "same-key");
            using var response = await app.Client.SendAsync(request);
        }

        Assert.Equal(2, disabled.Value);
        Assert.Equal(1, enabled.Value);
    }

    [Fact]
    public async Task Stored_statuses_as_text_release_the_key_for_other_statuses()
    {
        var textual = new Counter();
        var byDefault = new Counter();
        await using var app = await TestApp.StartAsync(a =>
        {
            a.MapPost("/textual", () => TypedResults.NotFound(textual.Increment())).RequireIdempotency(o => o.StoredStatuses = "2xx");
            a.MapPost("/default", () => TypedResults.NotFound(byDefault.Increment())).RequireIdempotency();
        });

        foreach (var path in new[] { "/textual", "/textual", "/default", "/default" })
        {
            var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
            request.Headers.Add("Idempotency-Key", "not-found-key");
            using var response = await app.Client.SendAsync(request);
        }

        Assert.Equal(2, textual.Value);
        Assert.Equal(1, byDefault.Value); // the default (below 500) stores the 404 and replays it
    }

    [Fact]
    public async Task The_handler_and_the_middleware_share_one_correlation_id()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/who", (HttpContext context) =>
            RequestCorrelation.Accept(context, "Another-Header").RequestId).RequireIdempotency());

        var request = new HttpRequestMessage(HttpMethod.Post, "/who") { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
        request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
        using var response = await app.Client.SendAsync(request);

        var echoed = Assert.Single(response.Headers.GetValues("X-Request-Id"));
        Assert.Equal(echoed, await response.Content.ReadAsStringAsync());
        Assert.Matches("^[0-9a-f]{32}$", echoed); // a trace id, not the server's connection-scoped TraceIdentifier
    }

    private static IdempotencyEndpointOptions Sample() => new()
    {
        Enabled = true,
        RequireKey = true,
        Methods = ["PUT"],
        ConflictBehavior = ConflictBehavior.Reject,
        Retention = TimeSpan.FromHours(1),
        Lease = TimeSpan.FromSeconds(20),
        WaitTimeout = TimeSpan.FromSeconds(5),
        ExecutionTimeout = TimeSpan.FromMinutes(1),
        ShouldStore = static s => s == 201,
        MaxStoredBodyBytes = 1000,
        StoreFailureMode = StoreFailureMode.FailOpen,
        ImplicitKeyWindow = TimeSpan.FromSeconds(10),
        JoinedTransaction = true,
    };
}
