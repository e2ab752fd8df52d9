using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace Idem.Gateway.FunctionalTests;

/// <summary>Graceful shutdown of in-process gateways sharing one store, and the gateway as a real OS process.</summary>
public sealed class ShutdownAndProcessTests
{
    [Fact]
    public async Task A_request_in_flight_at_shutdown_finishes_within_the_timeout_and_its_response_is_stored()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        var store = new InMemoryIdempotencyStore(TimeProvider.System);
        await using var first = await GatewayUnderTest.StartAsync(upstream.Address, ["--Idem:ShutdownTimeout", "00:00:10"], store);
        var key = Http.NewKey();

        var inFlight = first.Client.SendAsync(Http.Post("/orders?delayMs=1500", key));
        await WaitUntilAsync(() => upstream.Started("orders") == 1);
        var stopping = first.StopAsync();
        var response = await inFlight;
        await stopping;

        await using var second = await GatewayUnderTest.StartAsync(upstream.Address, store: store);
        var retry = await second.Client.SendAsync(Http.Post("/orders?delayMs=1500", key));

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.True(Http.Replayed(retry));
        Assert.Equal(await response.Content.ReadAsStringAsync(), await retry.Content.ReadAsStringAsync());
        Assert.Equal(1, upstream.Started("orders"));
    }

    [Fact]
    public async Task A_request_that_cannot_finish_before_the_shutdown_timeout_is_cancelled_and_its_key_released_at_once()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        var store = new InMemoryIdempotencyStore(TimeProvider.System);
        await using var first = await GatewayUnderTest.StartAsync(upstream.Address, ["--Idem:ShutdownTimeout", "00:00:02", "--Idem:Default:Lease", "00:00:30"], store);
        var key = Http.NewKey();

        var inFlight = first.Client.SendAsync(Http.Post("/orders?delayMs=20000", key));
        await WaitUntilAsync(() => upstream.Started("orders") == 1);
        var clock = Stopwatch.StartNew();
        await first.StopAsync();
        var stoppedAfter = clock.Elapsed;
        var abandoned = await Record.ExceptionAsync(() => inFlight);

        await using var second = await GatewayUnderTest.StartAsync(upstream.Address, store: store);
        clock.Restart();
        var retry = await second.Client.SendAsync(Http.Post("/orders", key));

        Assert.True(stoppedAfter < TimeSpan.FromSeconds(5), $"stop took {stoppedAfter}");
        Assert.Equal(1, upstream.Cancelled("orders")); // the upstream call was cancelled by the drain, not left running
        Assert.Equal(HttpStatusCode.Created, retry.StatusCode);
        Assert.False(Http.Replayed(retry));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"the retry waited {clock.Elapsed}: the key was not released (lease is 30 s)");
        Assert.Equal(2, upstream.Started("orders"));
        _ = abandoned; // the first caller got a 502 or a closed connection; either way nothing was stored for it
    }

    [Fact]
    public async Task The_gateway_runs_as_a_real_process_with_one_flag_and_stops_cleanly_on_SIGTERM_after_finishing_in_flight_work()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayProcess.StartAsync(GatewayProcess.GatewayDll, ["--upstream", upstream.Address.ToString().TrimEnd('/'), "--Idem:Store", "InMemory"]);
        var client = gateway.Client;

        var key = Http.NewKey();
        var first = await client.SendAsync(Http.Post("/orders", key));
        var second = await client.SendAsync(Http.Post("/orders", key));
        var inFlight = client.SendAsync(Http.Post("/slow?delayMs=1500", Http.NewKey()));
        await WaitUntilAsync(() => upstream.Started("slow") == 1);
        await gateway.TerminateAsync();

        var slow = await inFlight;
        var exitCode = await gateway.WaitForExitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.True(Http.Replayed(second));
        Assert.Equal(1, upstream.Started("orders"));
        Assert.Equal(HttpStatusCode.Created, slow.StatusCode);
        Assert.Equal(1, upstream.Completed("slow"));
        Assert.Equal(0, exitCode);
        var json = gateway.Output.Where(l => l.StartsWith('{')).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Contains(json, l => l.GetProperty("Category").GetString()!.StartsWith("Idem.Gateway", StringComparison.Ordinal) && l.GetProperty("EventId").GetInt32() == 5001);
    }

    [Fact]
    public async Task A_bad_configuration_exits_the_process_with_code_1_and_a_clear_message()
    {
        var code = await GatewayHost.RunAsync(["--upstream", "http://127.0.0.1:1", "--Idem:Store", "Redis", "--urls", "http://127.0.0.1:0"]);
        Assert.Equal(1, code);
    }

    private static Task WaitUntilAsync(Func<bool> condition) => WaitUntilAsync(() => Task.FromResult(condition()), TimeSpan.FromSeconds(10));

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            Assert.True(clock.Elapsed < timeout, "condition not reached in time");
            await Task.Delay(20);
        }
    }
}
