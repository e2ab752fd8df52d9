using System.Text;

namespace Idem.Tests;

public sealed class RequestFingerprintTests
{
    private static readonly byte[] Body = Encoding.UTF8.GetBytes("{\"amount\":100,\"currency\":\"EUR\"}");

    private static string Fingerprint(
        string? method = "POST",
        string? path = "/orders",
        string? query = "?a=1",
        string? contentType = "application/json",
        IEnumerable<byte[]>? chunks = null)
    {
        using var fingerprint = new RequestFingerprint();
        fingerprint.AppendPart("method", method);
        fingerprint.AppendPart("path", path);
        fingerprint.AppendPart("query", query);
        fingerprint.AppendPart("content-type", contentType);
        foreach (var chunk in chunks ?? [Body])
        {
            fingerprint.AppendBody(chunk);
        }

        return fingerprint.Complete();
    }

    private static IEnumerable<byte[]> Split(byte[] body, params int[] sizes)
    {
        var offset = 0;
        foreach (var size in sizes)
        {
            yield return body[offset..(offset + size)];
            offset += size;
        }

        yield return body[offset..];
    }

    [Fact]
    public void Is_64_lowercase_hex_and_deterministic()
    {
        var a = Fingerprint();
        Assert.Equal(64, a.Length);
        Assert.All(a, c => Assert.True(c is >= '0' and <= '9' or >= 'a' and <= 'f'));
        Assert.Equal(a, Fingerprint());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(4096)]
    [InlineData(16 * 1024)]
    [InlineData(200_000)]
    public void Large_bodies_hash_the_same_in_any_chunking_as_the_whole_stream(int chunk)
    {
        var body = new byte[200_000];
        new Random(42).NextBytes(body);
        var whole = FingerprintOf(body, body.Length);

        Assert.Equal(whole, FingerprintOf(body, chunk));
        Assert.NotEqual(whole, FingerprintOf(body.AsSpan(0, body.Length - 1).ToArray(), chunk));
    }

    private static string FingerprintOf(byte[] body, int chunk)
    {
        using var fingerprint = new RequestFingerprint();
        fingerprint.AppendPart("method", "POST");
        fingerprint.AppendPart("path", new string('p', 20_000)); // a part alone past the one-shot buffer
        for (var offset = 0; offset < body.Length; offset += chunk)
        {
            fingerprint.AppendBody(body.AsSpan(offset, Math.Min(chunk, body.Length - offset)));
        }

        return fingerprint.Complete();
    }

    [Fact]
    public void Chunking_does_not_change_the_result()
    {
        var whole = Fingerprint();
        Assert.Equal(whole, Fingerprint(chunks: Split(Body, 1)));
        Assert.Equal(whole, Fingerprint(chunks: Split(Body, 5, 5, 5)));
        Assert.Equal(whole, Fingerprint(chunks: Body.Select(b => new[] { b })));
        Assert.Equal(whole, Fingerprint(chunks: Split(Body, Body.Length))); // a trailing empty chunk
        Assert.Equal(whole, Fingerprint(chunks: Split(Body, 0, 3, 0))); // empty chunks, first one included
    }

    [Fact]
    public void Empty_body_is_the_same_whether_appended_or_not()
    {
        Assert.Equal(Fingerprint(chunks: []), Fingerprint(chunks: [[]]));
    }

    [Fact]
    public void Any_part_change_changes_the_result()
    {
        var all = new[]
        {
            Fingerprint(),
            Fingerprint(method: "PUT"),
            Fingerprint(path: "/orders/1"),
            Fingerprint(query: "?a=2"),
            Fingerprint(contentType: "text/plain"),
            Fingerprint(chunks: [Encoding.UTF8.GetBytes("{\"amount\":101,\"currency\":\"EUR\"}")]),
            Fingerprint(chunks: [Body[..^1]]),
            Fingerprint(chunks: []),
        };
        Assert.Equal(all.Length, all.Distinct(StringComparer.Ordinal).Count());
    }

    [Fact]
    public void Null_and_empty_parts_differ()
    {
        Assert.NotEqual(Fingerprint(query: null), Fingerprint(query: ""));
        Assert.NotEqual(Fingerprint(contentType: null), Fingerprint(contentType: ""));
    }

    [Fact]
    public void Values_cannot_slide_between_parts()
    {
        Assert.NotEqual(Fingerprint(path: "/orders?a=1", query: ""), Fingerprint(path: "/orders", query: "?a=1"));
    }

    [Fact]
    public void Parts_with_long_values_are_hashed_whole()
    {
        var a = Fingerprint(path: "/" + new string('p', 1000));
        var b = Fingerprint(path: "/" + new string('p', 999) + "q");
        Assert.NotEqual(a, b);
    }

    [Fact]
    public void Body_length_is_tracked_and_reset_by_complete()
    {
        using var fingerprint = new RequestFingerprint();
        fingerprint.AppendBody(Body.AsSpan(0, 3));
        fingerprint.AppendBody(Body.AsSpan(3));
        Assert.Equal(Body.Length, fingerprint.BodyLength);
        var first = fingerprint.Complete();
        Assert.Equal(0, fingerprint.BodyLength);

        // After Complete the instance starts over.
        fingerprint.AppendBody(Body);
        Assert.Equal(first, fingerprint.Complete());
    }

    [Fact]
    public void Compute_is_operation_plus_body()
    {
        var a = RequestFingerprint.Compute("charge", Body);
        Assert.Equal(a, RequestFingerprint.Compute("charge", Body));
        Assert.NotEqual(a, RequestFingerprint.Compute("refund", Body));
        Assert.NotEqual(a, RequestFingerprint.Compute("charge", Body.AsSpan(1)));

        using var manual = new RequestFingerprint();
        manual.AppendPart("operation", "charge");
        manual.AppendBody(Body.AsSpan(0, 7));
        manual.AppendBody(Body.AsSpan(7));
        Assert.Equal(a, manual.Complete());
    }

    [Fact]
    public void Fingerprints_do_not_change_between_releases()
    {
        // Stored with every record: a release computing other fingerprints would answer retries across an upgrade with 422.
        using var fingerprint = new RequestFingerprint();
        fingerprint.AppendPart("method", "POST");
        fingerprint.AppendPart("path", "/orders");
        fingerprint.AppendPart("query", null);
        fingerprint.AppendBody("{\"amount\":42}"u8);

        Assert.Equal("4f654e18f125abaf16c9c635468fb4b35388601abc731c72eda431e09f7075d8", fingerprint.Complete());
    }
}
