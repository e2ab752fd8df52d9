using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Xunit;

namespace Idem.AspNetCore.Tests;

/// <summary>
/// Tests that count the process's allocations: they run alone, since any test running beside them allocates into the
/// same counter (one clean-clone run in five failed when another test class allocated megabytes meanwhile).
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AllocationCountingTests
{
    public const string Name = "Allocation counting";
}

/// <summary>A captured response is held once: the store gets the captured bytes, not a copy made for it.</summary>
[Collection(AllocationCountingTests.Name)]
public sealed class ResponseCopyTests
{
    private const int BodySize = 4 * 1024 * 1024;
    private static readonly byte[] Body = Enumerable.Range(0, BodySize).Select(i => (byte)(i * 31)).ToArray();

    [Fact]
    public async Task A_large_response_is_not_copied_between_capture_and_store()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/report", async (HttpContext context) =>
        {
            context.Response.ContentType = "application/octet-stream";
            await context.Response.Body.WriteAsync(Body); // written from a static array: the handler allocates nothing
        }).RequireIdempotency(o => o.MaxStoredBodyBytes = 2 * BodySize));

        // Warm-up fills the array pool the capture rents from, then each request allocates the store's copy (the
        // in-memory arena's dedicated chunk) and little else. A copy of the body made for the store would add a whole
        // body to every request.
        await PostAsync(app, "warm-up");
        var least = long.MaxValue;
        for (var i = 0; i < 5; i++)
        {
            var before = GC.GetTotalAllocatedBytes(precise: true);
            await PostAsync(app, $"measured-{i}");
            least = Math.Min(least, GC.GetTotalAllocatedBytes(precise: true) - before);
        }

        Assert.True(least < 1.5 * BodySize, $"a request allocated at least {least:N0} bytes for a {BodySize:N0}-byte body");

        // And the stored bytes are the response, even though the capture's buffer went back to the pool and was reused.
        using var replay = await SendAsync(app, "measured-0", drain: false);
        Assert.Equal("true", replay.Headers.GetValues("Idempotent-Replayed").Single());
        var replayed = await replay.Content.ReadAsByteArrayAsync();
        Assert.True(Body.AsSpan().SequenceEqual(replayed));
    }

    private static async Task PostAsync(TestApp app, string key)
    {
        using var response = await SendAsync(app, key, drain: true);
        response.EnsureSuccessStatusCode();
    }

    // Read in small pieces, so the client's buffers do not count as the server's allocations.
    private static async Task<HttpResponseMessage> SendAsync(TestApp app, string key, bool drain)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/report") { Headers = { { "Idempotency-Key", key } } };
        var response = await app.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        if (!drain)
        {
            return response;
        }

        await using var stream = await response.Content.ReadAsStreamAsync();
        await stream.CopyToAsync(Stream.Null);
        return response;
    }
}
