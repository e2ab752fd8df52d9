using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Idem.TestUtils;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Idem.AspNetCore.Tests;

public sealed class ProtocolTests
{
    private static HttpRequestMessage Post(string path, string? key, string body = "{\"amount\":42}", string? user = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        if (key is not null)
        {
            request.Headers.TryAddWithoutValidation("Idempotency-Key", key);
        }

        if (user is not null)
        {
            request.Headers.Add("X-User", user);
        }

        return request;
    }

    private static async Task<TestApp> OrdersAppAsync(Counter counter, Action<IIdempotencyBuilder>? store = null, Action<IdempotencyOptions>? configure = null, TimeSpan? handlerDelay = null) =>
        await TestApp.StartAsync(app =>
        {
            app.MapPost("/orders", async (HttpContext context) =>
            {
                var n = counter.Increment();
                if (handlerDelay is { } delay)
                {
                    await Task.Delay(delay, context.RequestAborted);
                }

                var id = Guid.NewGuid();
                context.Response.Cookies.Append("session", "s" + n);
                return TypedResults.Created($"/orders/{id}", new { id, execution = n, amount = 42.50m, at = DateTimeOffset.UtcNow });
            }).RequireIdempotency();
        }, store, configure);

    [Fact]
    public async Task Concurrent_same_key_requests_execute_once_and_get_identical_bodies()
    {
        var counter = new Counter();
        await using var app = await OrdersAppAsync(counter, handlerDelay: TimeSpan.FromMilliseconds(300));
        var key = Guid.NewGuid().ToString();
        using var start = new ManualResetEventSlim();

        var tasks = Enumerable.Range(0, 500).Select(_ => Task.Run(async () =>
        {
            start.Wait();
            using var response = await app.Client.SendAsync(Post("/orders", key));
            return ((int)response.StatusCode, await response.Content.ReadAsByteArrayAsync(), response.Headers.Location);
        })).ToArray();
        start.Set();
        var results = await Task.WhenAll(tasks);

        Assert.Equal(1, counter.Value);
        Assert.All(results, r => Assert.Equal(201, r.Item1));
        var first = results[0];
        Assert.All(results, r => Assert.Equal(first.Item2, r.Item2));
        Assert.All(results, r => Assert.Equal(first.Location, r.Location));
    }

    [Fact]
    public async Task Sequential_replay_is_byte_exact_with_location_and_marker_but_no_cookie()
    {
        var counter = new Counter();
        await using var app = await OrdersAppAsync(counter);
        var key = Guid.NewGuid().ToString();

        using var first = await app.Client.SendAsync(Post("/orders", key));
        using var second = await app.Client.SendAsync(Post("/orders", key));

        Assert.Equal(1, counter.Value);
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(HttpStatusCode.Created, second.StatusCode);
        Assert.Equal(await first.Content.ReadAsByteArrayAsync(), await second.Content.ReadAsByteArrayAsync());
        Assert.NotNull(first.Headers.Location);
        Assert.Equal(first.Headers.Location, second.Headers.Location);
        Assert.Equal(first.Content.Headers.ContentType, second.Content.Headers.ContentType);
        Assert.False(first.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal("true", Assert.Single(second.Headers.GetValues("Idempotent-Replayed")));
        Assert.True(first.Headers.Contains("Set-Cookie"));
        Assert.False(second.Headers.Contains("Set-Cookie"));
    }

    [Fact]
    public async Task Same_key_with_another_body_is_422_problem()
    {
        var counter = new Counter();
        await using var app = await OrdersAppAsync(counter);
        var key = Guid.NewGuid().ToString();

        using var first = await app.Client.SendAsync(Post("/orders", key, "{\"amount\":1}"));
        using var second = await app.Client.SendAsync(Post("/orders", key, "{\"amount\":2}"));

        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        await AssertProblemAsync(second, 422, "different request");
        Assert.Equal(1, counter.Value);
    }

    public static TheoryData<string[], string> InvalidKeys => new()
    {
        { [""], "empty" },
        { [new string('k', 256)], "256" },
        { ["with space"], "visible ASCII" },
        { ["caf\u00e9"], "visible ASCII" },
        { ["a", "b"], "2 times" },
        { ["\"unterminated\\\""], "quoted" },
        { ["\"\""], "empty" },
    };

    [Theory]
    [MemberData(nameof(InvalidKeys))]
    public async Task Invalid_keys_are_400_problems_and_do_not_run_the_handler(string[] values, string expectedDetail)
    {
        var counter = new Counter();
        await using var app = await OrdersAppAsync(counter);

        var response = await RawHttp.SendAsync(app.Address, "POST", "/orders", values.Select(v => ("Idempotency-Key", v)).Append(("Content-Type", "application/json")), "{}"u8.ToArray());

        Assert.Equal(400, response.Status);
        Assert.Equal("application/problem+json", response.Header("Content-Type"));
        Assert.Contains(expectedDetail, response.Body, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(0, counter.Value);
    }

    [Fact]
    public async Task Quoted_structured_field_key_means_its_content()
    {
        var counter = new Counter();
        await using var app = await OrdersAppAsync(counter);

        using var first = await app.Client.SendAsync(Post("/orders", "\"order-7\""));
        using var second = await app.Client.SendAsync(Post("/orders", "order-7"));

        Assert.Equal(1, counter.Value);
        Assert.True(second.Headers.Contains("Idempotent-Replayed"));
    }

    [Fact]
    public async Task Missing_key_passes_through_when_optional_and_is_400_when_required()
    {
        var counter = new Counter();
        await using var app = await TestApp.StartAsync(app =>
        {
            app.MapPost("/optional", () => TypedResults.Ok(new { n = counter.Increment() })).RequireIdempotency();
            app.MapPost("/required", () => TypedResults.Ok(new { n = counter.Increment() })).RequireIdempotency(o => o.RequireKey = true);
        });

        using var a = await app.Client.SendAsync(Post("/optional", null));
        using var b = await app.Client.SendAsync(Post("/optional", null));
        Assert.Equal(HttpStatusCode.OK, a.StatusCode);
        Assert.Equal(HttpStatusCode.OK, b.StatusCode);
        Assert.Equal(2, counter.Value);

        using var c = await app.Client.SendAsync(Post("/required", null));
        await AssertProblemAsync(c, 400, "requires an Idempotency-Key");
        Assert.Equal(2, counter.Value);
    }

    [Theory]
    [InlineData("throw")]
    [InlineData("500")]
    [InlineData("503")]
    [InlineData("429")]
    public async Task Failures_release_the_key_so_a_retry_executes_again(string failure)
    {
        var counter = new Counter();
        await using var app = await TestApp.StartAsync(app =>
        {
            app.MapPost("/flaky", IResult () =>
            {
                if (counter.Increment() == 1)
                {
                    return failure == "throw" ? throw new InvalidOperationException("boom") : TypedResults.StatusCode(int.Parse(failure));
                }

                return TypedResults.Ok(new { ok = true });
            }).RequireIdempotency();
        });
        var key = Guid.NewGuid().ToString();

        using var first = await app.Client.SendAsync(Post("/flaky", key));
        using var second = await app.Client.SendAsync(Post("/flaky", key));
        using var third = await app.Client.SendAsync(Post("/flaky", key));

        Assert.True((int)first.StatusCode >= 429);
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.False(second.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(HttpStatusCode.OK, third.StatusCode);
        Assert.True(third.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(2, counter.Value);
    }

    [Fact]
    public async Task Client_errors_below_500_are_stored_and_replayed()
    {
        var counter = new Counter();
        await using var app = await TestApp.StartAsync(app =>
            app.MapPost("/reject", () => { counter.Increment(); return TypedResults.Problem("insufficient funds", statusCode: 402); }).RequireIdempotency());
        var key = Guid.NewGuid().ToString();

        using var first = await app.Client.SendAsync(Post("/reject", key));
        using var second = await app.Client.SendAsync(Post("/reject", key));

        Assert.Equal(402, (int)second.StatusCode);
        Assert.True(second.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(1, counter.Value);
    }

    [Fact]
    public async Task A_client_that_times_out_does_not_cancel_the_work_and_its_retry_gets_the_stored_response()
    {
        var counter = new Counter();
        var finished = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(app =>
        {
            app.MapPost("/slow", async (HttpContext context) =>
            {
                var n = counter.Increment();
                entered.TrySetResult();
                try
                {
                    // Waits until the first client has given up, then keeps working under RequestAborted.
                    await release.Task.WaitAsync(context.RequestAborted);
                    await Task.Delay(50, context.RequestAborted);
                    finished.TrySetResult(true);
                }
                catch (OperationCanceledException)
                {
                    finished.TrySetResult(false);
                    throw;
                }

                return TypedResults.Created("/slow/1", new { execution = n });
            }).RequireIdempotency();
        });
        var key = Guid.NewGuid().ToString();

        // The client gives up once the handler is running (a timeout, made deterministic: a fixed 300 ms timeout
        // could fire before a loaded machine even reached the handler).
        using (var impatient = app.CreateClient())
        using (var giveUp = new CancellationTokenSource())
        {
            var pending = impatient.SendAsync(Post("/slow", key), giveUp.Token);
            await entered.Task.WaitAsync(TimeSpan.FromSeconds(30));
            await giveUp.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending);
        }

        release.SetResult();
        Assert.True(await finished.Task.WaitAsync(TimeSpan.FromSeconds(30)), "The handler was cancelled when its client went away.");

        using var retry = await app.Client.SendAsync(Post("/slow", key));
        Assert.Equal(HttpStatusCode.Created, retry.StatusCode);
        Assert.True(retry.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(1, counter.Value);
    }

    [Fact]
    public async Task A_large_body_written_to_the_pipe_after_the_client_left_is_stored_whole_for_the_retry()
    {
        const int Chunks = 48;
        const int ChunkSize = 16 * 1024; // 768 KB: well past any socket buffer, under the 1 MB storage limit
        var counter = new Counter();
        var finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(app =>
        {
            app.MapPost("/export", async (HttpContext context) =>
            {
                counter.Increment();
                context.Response.ContentType = "application/octet-stream";
                await context.Response.BodyWriter.FlushAsync(); // sends the headers: the client has them, then leaves
                entered.TrySetResult();
                await release.Task;
                for (var i = 0; i < Chunks; i++)
                {
                    var span = context.Response.BodyWriter.GetSpan(ChunkSize)[..ChunkSize];
                    span.Fill((byte)i);
                    context.Response.BodyWriter.Advance(ChunkSize);
                    await context.Response.BodyWriter.FlushAsync();
                }

                finished.TrySetResult();
            }).RequireIdempotency();
        });
        var key = Guid.NewGuid().ToString();

        using (var impatient = app.CreateClient())
        using (var giveUp = new CancellationTokenSource())
        {
            var pending = impatient.SendAsync(Post("/export", key), HttpCompletionOption.ResponseHeadersRead, giveUp.Token);
            await entered.Task.WaitAsync(TimeSpan.FromSeconds(30));
            using var first = await pending;
            impatient.Dispose(); // closes the connection with the body unread
        }

        release.SetResult();
        await finished.Task.WaitAsync(TimeSpan.FromSeconds(30));
        using var retry = await app.Client.SendAsync(Post("/export", key));
        var body = await retry.Content.ReadAsByteArrayAsync();

        Assert.True(retry.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(Chunks * ChunkSize, body.Length);
        Assert.All(Enumerable.Range(0, Chunks), i => Assert.True(body.AsSpan(i * ChunkSize, ChunkSize).IndexOfAnyExcept((byte)i) < 0, $"chunk {i} differs"));
        Assert.Equal(1, counter.Value);
    }

    [Fact]
    public async Task The_same_key_from_two_principals_executes_twice_without_leaking()
    {
        var counter = new Counter();
        await using var app = await TestApp.StartAsync(app =>
            app.MapPost("/me", (HttpContext c) => TypedResults.Ok(new { user = c.User.Identity!.Name ?? c.User.Claims.First().Value, n = counter.Increment() })).RequireIdempotency());
        const string key = "shared-key";

        using var alice = await app.Client.SendAsync(Post("/me", key, user: "alice"));
        using var bob = await app.Client.SendAsync(Post("/me", key, user: "bob"));
        using var aliceAgain = await app.Client.SendAsync(Post("/me", key, user: "alice"));

        Assert.Equal(2, counter.Value);
        Assert.Contains("alice", await alice.Content.ReadAsStringAsync());
        Assert.Contains("bob", await bob.Content.ReadAsStringAsync());
        Assert.False(bob.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(await alice.Content.ReadAsStringAsync(), await aliceAgain.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Store_failure_is_503_when_closed_and_counted_when_open()
    {
        var counter = new Counter();
        var failing = new CountingStore(new InMemoryIdempotencyStore()) { FailWith = new TimeoutException("store down") };
        await using var app = await TestApp.StartAsync(app =>
        {
            app.MapPost("/closed", () => TypedResults.Ok(counter.Increment())).RequireIdempotency();
            app.MapPost("/open", () => TypedResults.Ok(counter.Increment())).RequireIdempotency(o => o.StoreFailureMode = StoreFailureMode.FailOpen);
        }, store: b => b.UseStore(_ => failing));
        using var collector = new Microsoft.Extensions.Diagnostics.Metrics.Testing.MetricCollector<long>(
            app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), IdempotencyMetrics.MeterName, "idem.requests");

        using var closed = await app.Client.SendAsync(Post("/closed", "k1"));
        await AssertProblemAsync(closed, 503, "could not be guaranteed");
        Assert.NotNull(closed.Headers.RetryAfter);
        Assert.Equal(0, counter.Value);

        using var open = await app.Client.SendAsync(Post("/open", "k2"));
        Assert.Equal(HttpStatusCode.OK, open.StatusCode);
        Assert.Equal(1, counter.Value);

        var tags = collector.GetMeasurementSnapshot().Select(m => (string)m.Tags[IdempotencyMetrics.OutcomeTag]!).ToList();
        Assert.Contains(IdempotencyOutcomes.StoreError, tags);
        Assert.Contains(IdempotencyOutcomes.Unprotected, tags);
    }

    [Fact]
    public async Task First_execution_costs_two_store_calls_and_a_replay_one()
    {
        var store = new CountingStore(new InMemoryIdempotencyStore());
        await using var app = await TestApp.StartAsync(
            app => app.MapPost("/orders", () => TypedResults.Ok(new { ok = 1 })).RequireIdempotency(),
            store: b => b.UseStore(_ => store));
        var key = Guid.NewGuid().ToString();

        using (await app.Client.SendAsync(Post("/orders", key)))
        {
        }

        Assert.Equal((1, 1, 2), (store.Claims, store.Completes, store.Total));

        store.Reset();
        using (await app.Client.SendAsync(Post("/orders", key)))
        {
        }

        Assert.Equal((1, 1), (store.Claims, store.Total));
    }

    [Fact]
    public async Task In_flight_key_is_409_with_retry_after_when_the_endpoint_rejects()
    {
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(app =>
            app.MapPost("/reject", async () =>
            {
                entered.TrySetResult();
                await release.Task;
                return TypedResults.Ok();
            }).RequireIdempotency(o => o.ConflictBehavior = ConflictBehavior.Reject));
        var key = Guid.NewGuid().ToString();

        var first = app.Client.SendAsync(Post("/reject", key));
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(30));
        using var second = await app.Client.SendAsync(Post("/reject", key));
        release.SetResult();
        using var firstResponse = await first;

        await AssertProblemAsync(second, 409, "still being processed");
        Assert.NotNull(second.Headers.RetryAfter);
        Assert.Equal(HttpStatusCode.OK, firstResponse.StatusCode);
    }

    [Fact]
    public async Task A_response_too_large_to_store_runs_once_and_replays_as_409()
    {
        var counter = new Counter();
        await using var app = await TestApp.StartAsync(app =>
            app.MapPost("/big", () => { counter.Increment(); return TypedResults.Text(new string('x', 5000)); })
               .RequireIdempotency(o => o.MaxStoredBodyBytes = 1000));
        var key = Guid.NewGuid().ToString();

        using var first = await app.Client.SendAsync(Post("/big", key));
        using var second = await app.Client.SendAsync(Post("/big", key));

        Assert.Equal(5000, (await first.Content.ReadAsStringAsync()).Length);
        await AssertProblemAsync(second, 409, "processed with status 200");
        Assert.Equal(1, counter.Value);
    }

    [Fact]
    public async Task A_request_body_over_the_limit_is_413_and_not_executed()
    {
        var counter = new Counter();
        await using var app = await TestApp.StartAsync(
            app => app.MapPost("/upload", () => TypedResults.Ok(counter.Increment())).RequireIdempotency(),
            configure: o => o.MaxRequestBodyBytes = 1000);

        using var sized = await app.Client.SendAsync(Post("/upload", "k1", new string('a', 2000)));
        await AssertProblemAsync(sized, 413, "limited to 1000 bytes");

        var chunked = new HttpRequestMessage(HttpMethod.Post, "/upload") { Content = new StreamContent(new UnknownLengthStream(new byte[3000])) };
        chunked.Headers.Add("Idempotency-Key", "k2");
        using var streamed = await app.Client.SendAsync(chunked);
        await AssertProblemAsync(streamed, 413, "limited to 1000 bytes");
        Assert.Equal(0, counter.Value);
    }

    [Fact]
    public async Task The_handler_reads_the_same_body_that_was_fingerprinted()
    {
        await using var app = await TestApp.StartAsync(app =>
            app.MapPost("/echo", async (HttpRequest r) => TypedResults.Text(await new StreamReader(r.Body).ReadToEndAsync())).RequireIdempotency(),
            configure: o => o.RequestBufferThreshold = 16);
        var body = string.Concat(Enumerable.Repeat("0123456789", 100));

        using var response = await app.Client.SendAsync(Post("/echo", "k", body));

        Assert.Equal(body, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Correlation_id_is_accepted_and_echoed_and_put_in_problems()
    {
        await using var app = await TestApp.StartAsync(app => app.MapPost("/orders", () => TypedResults.Ok()).RequireIdempotency());

        var request = Post("/orders", "bad key");
        request.Headers.Add("X-Request-Id", "corr-123");
        using var response = await app.Client.SendAsync(request);

        Assert.Equal("corr-123", Assert.Single(response.Headers.GetValues("X-Request-Id")));
        Assert.Contains("corr-123", await response.Content.ReadAsStringAsync());

        using var generated = await app.Client.SendAsync(Post("/orders", "good"));
        Assert.False(string.IsNullOrEmpty(Assert.Single(generated.Headers.GetValues("X-Request-Id"))));
    }

    [Fact]
    public async Task Unprotected_methods_and_endpoints_pass_through()
    {
        var counter = new Counter();
        await using var app = await TestApp.StartAsync(app =>
        {
            app.MapPut("/put", () => TypedResults.Ok(counter.Increment())).RequireIdempotency();
            app.MapPut("/put-opt-in", () => TypedResults.Ok(counter.Increment())).RequireIdempotency(o => o.Methods = ["PUT"]);
            app.MapPost("/plain", () => TypedResults.Ok(counter.Increment()));
        });

        for (var i = 0; i < 2; i++)
        {
            using var put = await app.Client.SendAsync(new HttpRequestMessage(HttpMethod.Put, "/put") { Headers = { { "Idempotency-Key", "k" } } });
            using var plain = await app.Client.SendAsync(Post("/plain", "k"));
        }

        Assert.Equal(4, counter.Value);
        for (var i = 0; i < 2; i++)
        {
            using var optIn = await app.Client.SendAsync(new HttpRequestMessage(HttpMethod.Put, "/put-opt-in") { Headers = { { "Idempotency-Key", "k" } } });
        }

        Assert.Equal(5, counter.Value);
    }

    [Theory]
    [InlineData("handler")]
    [InlineData("request-delegate")]
    [InlineData("group")]
    public async Task A_protected_endpoint_without_the_middleware_fails_loudly_instead_of_running_unprotected(string shape)
    {
        var counter = new Counter();
        await using var app = await TestApp.StartAsync(
            app =>
            {
                switch (shape)
                {
                    case "handler":
                        app.MapPost("/orders", () => TypedResults.Ok(counter.Increment())).RequireIdempotency();
                        break;
                    case "request-delegate":
                        // A RequestDelegate endpoint has no endpoint filters: the guard must not depend on them.
                        app.MapPost("/orders", (HttpContext context) => context.Response.WriteAsync($"{counter.Increment()}")).RequireIdempotency();
                        break;
                    default:
                        app.MapGroup("/").RequireIdempotency().MapPost("/orders", () => TypedResults.Ok(counter.Increment()));
                        break;
                }
            },
            useMiddleware: false);

        using var response = await app.Client.SendAsync(Post("/orders", "k"));

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Equal(0, counter.Value);
    }

    [Fact]
    public async Task Implicit_keys_deduplicate_keyless_repeats_within_the_window_only()
    {
        var counter = new Counter();
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var app = await TestApp.StartAsync(
            app => app.MapPost("/chat", () => TypedResults.Ok(new { n = counter.Increment() })).RequireIdempotency(o => o.ImplicitKeyWindow = TimeSpan.FromSeconds(10)),
            services: s => s.AddSingleton<TimeProvider>(time));

        using var a = await app.Client.SendAsync(Post("/chat", null, "{\"with\":\"bob\"}", user: "alice"));
        using var b = await app.Client.SendAsync(Post("/chat", null, "{\"with\":\"bob\"}", user: "alice"));
        using var other = await app.Client.SendAsync(Post("/chat", null, "{\"with\":\"carol\"}", user: "alice"));
        using var otherUser = await app.Client.SendAsync(Post("/chat", null, "{\"with\":\"bob\"}", user: "dave"));
        Assert.Equal(3, counter.Value);
        Assert.True(b.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(await a.Content.ReadAsStringAsync(), await b.Content.ReadAsStringAsync());

        time.Advance(TimeSpan.FromSeconds(11));
        using var later = await app.Client.SendAsync(Post("/chat", null, "{\"with\":\"bob\"}", user: "alice"));
        Assert.False(later.Headers.Contains("Idempotent-Replayed"));
        Assert.Equal(4, counter.Value);
    }

    [Fact]
    public async Task Canonical_json_fingerprint_accepts_a_reserialized_retry_but_not_a_changed_value()
    {
        var counter = new Counter();
        await using var app = await TestApp.StartAsync(
            app => app.MapPost("/orders", () => TypedResults.Ok(counter.Increment())).RequireIdempotency(),
            configure: o => o.CanonicalJsonFingerprint = true);

        using var first = await app.Client.SendAsync(Post("/orders", "k", "{\"a\":1,\"b\":{\"c\":[1,2],\"d\":null}}"));
        using var reordered = await app.Client.SendAsync(Post("/orders", "k", "{ \"b\": { \"d\": null, \"c\": [1, 2] },\n \"a\": 1 }"));
        using var changed = await app.Client.SendAsync(Post("/orders", "k", "{\"a\":1,\"b\":{\"c\":[2,1],\"d\":null}}"));

        Assert.True(reordered.Headers.Contains("Idempotent-Replayed"));
        await AssertProblemAsync(changed, 422, "different request");
        Assert.Equal(1, counter.Value);
    }

    internal static async Task AssertProblemAsync(HttpResponseMessage response, int status, string detailContains)
    {
        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(status, problem.RootElement.GetProperty("status").GetInt32());
        Assert.Contains(detailContains, problem.RootElement.GetProperty("detail").GetString(), StringComparison.OrdinalIgnoreCase);
        Assert.False(response.Headers.Contains("Idempotent-Replayed"));
    }
}

public sealed class Counter
{
    private int _value;

    public int Value => Volatile.Read(ref _value);

    public int Increment() => Interlocked.Increment(ref _value);
}

/// <summary>A body whose length is not known up front, so it is sent chunked.</summary>
internal sealed class UnknownLengthStream(byte[] data) : MemoryStream(data)
{
    public override bool CanSeek => false;
}
