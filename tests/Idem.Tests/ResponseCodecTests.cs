namespace Idem.Tests;

/// <summary>
/// Both stored forms of response headers: the persisted one (version 1, UTF-16) that SQLite and Redis write and older
/// releases read, and the compact one (version 2, ASCII) the in-memory store keeps.
/// </summary>
public sealed class ResponseCodecTests
{
    public static TheoryData<KeyValuePair<string, string>[]> HeaderSets => new()
    {
        Array.Empty<KeyValuePair<string, string>>(),
        new KeyValuePair<string, string>[] { new("Location", "/orders/3fa85f64-5717-4562-b3fc-2c963f66afa6") },
        new KeyValuePair<string, string>[] { new("Link", "<a>"), new("Link", "<b>"), new("X-Empty", string.Empty), new(string.Empty, "v") },
        new KeyValuePair<string, string>[] { new("X-Long", new string('v', 70_000)), new("X-Long-" + new string('n', 200), "x") }, // multi-byte lengths
        new KeyValuePair<string, string>[] { new("Location", "/things/é"), new("X-Ascii", "a") }, // not ASCII: version 1
        new KeyValuePair<string, string>[] { new("X-Surrogate", "\ud800") }, // not even valid UTF-16: still exact
    };

    [Theory]
    [MemberData(nameof(HeaderSets))]
    public void The_compact_form_round_trips_exactly(KeyValuePair<string, string>[] headers)
    {
        var length = ResponseCodec.GetCompactLength(headers, out var ascii);
        var buffer = new byte[length + 3];
        ResponseCodec.WriteCompact(headers, ascii, buffer);

        var decoded = ResponseCodec.DecodeHeaders(buffer, out var consumed);

        Assert.Equal(length, consumed);
        Assert.Equal(headers, decoded);
        Assert.Equal(headers.All(h => h.Key.All(char.IsAscii) && h.Value.All(char.IsAscii)), ascii);
        Assert.Equal(ascii ? 2 : 1, buffer[0]);
    }

    [Theory]
    [MemberData(nameof(HeaderSets))]
    public void The_persisted_form_stays_version_1_and_round_trips_exactly(KeyValuePair<string, string>[] headers)
    {
        var encoded = ResponseCodec.EncodeHeaders(headers);

        Assert.Equal(1, encoded[0]);
        Assert.Equal(headers, ResponseCodec.DecodeHeaders(encoded));
    }

    [Fact]
    public void The_compact_form_of_a_location_header_is_under_half_the_persisted_one()
    {
        KeyValuePair<string, string>[] headers = [new("Location", "/orders/3fa85f64-5717-4562-b3fc-2c963f66afa6")];

        Assert.True(2 * ResponseCodec.GetCompactLength(headers, out _) < ResponseCodec.GetEncodedLength(headers));
    }

    [Theory]
    [InlineData(new byte[] { 2 })] // no count
    [InlineData(new byte[] { 2, 1, 5, (byte)'a' })] // name shorter than its length
    [InlineData(new byte[] { 2, 1, 0 })] // no value
    [InlineData(new byte[] { 2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 })] // a length longer than five 7-bit groups
    [InlineData(new byte[] { 2, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F })] // a count beyond int
    [InlineData(new byte[] { 2, 0x80, 0x80, 0x80, 0x80, 0x10 })] // bits beyond 32 that a decoder could drop, reading 0 headers
    [InlineData(new byte[] { 2, 100, 0, 0 })] // more headers than bytes
    [InlineData(new byte[] { 3, 0 })] // unknown version
    public void Corrupt_data_is_refused_not_misread(byte[] data)
    {
        Assert.Throws<InvalidDataException>(() => ResponseCodec.DecodeHeaders(data));
    }
}
