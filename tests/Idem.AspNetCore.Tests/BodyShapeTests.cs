using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Idem.AspNetCore.Tests;

/// <summary>Every way an endpoint can write its response is captured byte-exact and replayed the same.</summary>
public sealed class BodyShapeTests : IAsyncLifetime
{
    private readonly Counter _counter = new();
    private TestApp _app = null!;

    public async Task InitializeAsync()
    {
        _app = await TestApp.StartAsync(
            app =>
            {
                var group = app.MapGroup("/shapes").RequireIdempotency();
                group.MapPost("/typed", () => TypedResults.Created("/things/1", new Thing(_counter.Increment(), 12.50m, 3_000_000_000L)));
                group.MapPost("/union", Results<Created<Thing>, NotFound, ValidationProblem> (bool? missing) =>
                    missing == true ? TypedResults.NotFound() : TypedResults.Created("/things/2", new Thing(_counter.Increment(), 1.10m, 7)));
                group.MapPost("/anonymous", () => new { id = _counter.Increment(), price = 0.1m, big = long.MaxValue, tags = new[] { "a", "b" } });
                group.MapPost("/string", () => $"plain {_counter.Increment()}");
                group.MapPost("/streamed", async (HttpContext context) =>
                {
                    var n = _counter.Increment();
                    context.Response.StatusCode = 202;
                    context.Response.ContentType = "application/octet-stream";
                    context.Response.Headers.ETag = $"\"v{n}\"";
                    for (var i = 0; i < 50; i++)
                    {
                        await context.Response.Body.WriteAsync(Enumerable.Range(0, 256).Select(b => (byte)((b + i + n) % 256)).ToArray());
                        await context.Response.Body.FlushAsync();
                    }
                });
                group.MapPost("/pipe", async (HttpContext context) =>
                {
                    var n = _counter.Increment();
                    context.Response.ContentType = "text/plain; charset=utf-8";
                    await context.Response.StartAsync();
                    for (var i = 0; i < 20; i++)
                    {
                        await context.Response.BodyWriter.WriteAsync(Encoding.UTF8.GetBytes($"line {i} of {n} ü\n"));
                    }
                });
                group.MapPost("/empty", () => { _counter.Increment(); return TypedResults.NoContent(); });
                app.MapControllers();
            },
            services: s => s.AddControllers().AddApplicationPart(typeof(BodyShapeTests).Assembly));
    }

    public async Task DisposeAsync() => await _app.DisposeAsync();

    [Theory]
    [InlineData("/shapes/typed")]
    [InlineData("/shapes/union")]
    [InlineData("/shapes/union?missing=true")]
    [InlineData("/shapes/anonymous")]
    [InlineData("/shapes/string")]
    [InlineData("/shapes/streamed")]
    [InlineData("/shapes/pipe")]
    [InlineData("/shapes/empty")]
    [InlineData("/mvc/orders")]
    [InlineData("/mvc/orders/object")]
    public async Task Replay_is_byte_identical_to_the_first_response(string path)
    {
        var key = Guid.NewGuid().ToString();

        using var first = await Send(path, key);
        var before = _counter.Value;
        using var replay = await Send(path, key);

        Assert.Equal(before, _counter.Value);
        Assert.False(first.Headers.Contains("Idempotent-Replayed"));
        Assert.True(replay.Headers.Contains("Idempotent-Replayed"), $"status {replay.StatusCode}");
        Assert.Equal(first.StatusCode, replay.StatusCode);
        Assert.Equal(await first.Content.ReadAsByteArrayAsync(), await replay.Content.ReadAsByteArrayAsync());
        Assert.Equal(first.Content.Headers.ContentType?.ToString(), replay.Content.Headers.ContentType?.ToString());
        Assert.Equal(first.Headers.Location, replay.Headers.Location);
        Assert.Equal(first.Headers.ETag, replay.Headers.ETag);
    }

    [Fact]
    public async Task Mvc_action_with_idempotent_attribute_executes_once()
    {
        var key = Guid.NewGuid().ToString();
        var tasks = Enumerable.Range(0, 50).Select(_ => Send("/mvc/orders", key)).ToArray();
        var responses = await Task.WhenAll(tasks);
        var bodies = await Task.WhenAll(responses.Select(r => r.Content.ReadAsStringAsync()));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        Assert.Single(bodies.Distinct());
        Assert.Equal(1, OrdersController.Executions(key));
    }

    private Task<HttpResponseMessage> Send(string path, string key)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
        request.Headers.Add("Idempotency-Key", key);
        request.Headers.Add("X-Test-Key", key);
        return _app.Client.SendAsync(request);
    }

    public sealed record Thing(int Id, decimal Price, long Big);
}

[ApiController]
[Route("mvc/orders")]
[Idempotent]
public sealed class OrdersController : ControllerBase
{
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> ExecutionsByKey = new();

    public static int Executions(string key) => ExecutionsByKey.GetValueOrDefault(key);

    [HttpPost]
    public async Task<ActionResult<BodyShapeTests.Thing>> Create()
    {
        var n = ExecutionsByKey.AddOrUpdate(Request.Headers["X-Test-Key"].ToString(), 1, (_, v) => v + 1);
        await Task.Delay(100);
        return CreatedAtAction(nameof(Get), new { id = n }, new BodyShapeTests.Thing(n, 9.99m, 1L << 40));
    }

    [HttpPost("object")]
    public IActionResult CreateObject() => new ObjectResult(new { created = Guid.NewGuid(), count = ExecutionsByKey.AddOrUpdate(Request.Headers["X-Test-Key"].ToString(), 1, (_, v) => v + 1) }) { StatusCode = 200 };

    [HttpGet("{id}")]
    public IActionResult Get(int id) => Ok(id);
}
