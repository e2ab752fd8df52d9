using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Idem;

/// <summary>
/// The stored form of response headers: version byte 1, then a little-endian int32 count, then per header the name and
/// the value, each as an int32 length in UTF-16 code units followed by those code units (little-endian). UTF-16 keeps
/// any .NET string exactly, order and repeated names included. Shared by the stores that keep responses as bytes:
/// SQLite stores the headers alone; the in-memory store appends the body after them in the same array.
/// </summary>
internal static class ResponseCodec
{
    private const byte Version = 1;

    public static byte[] EncodeHeaders(IReadOnlyList<KeyValuePair<string, string>> headers) => EncodeHeaders(headers, 0, out _);

    /// <summary>Encodes the headers into an array with <paramref name="trailingBytes"/> free bytes after them, from <paramref name="headersLength"/> on.</summary>
    public static byte[] EncodeHeaders(IReadOnlyList<KeyValuePair<string, string>> headers, int trailingBytes, out int headersLength)
    {
        headersLength = GetEncodedLength(headers);
        var buffer = new byte[headersLength + trailingBytes];
        WriteHeaders(headers, buffer);
        return buffer;
    }

    /// <summary>How many bytes <see cref="WriteHeaders"/> writes for <paramref name="headers"/>.</summary>
    public static int GetEncodedLength(IReadOnlyList<KeyValuePair<string, string>> headers)
    {
        // Indexed loops: a foreach over the interface would box an enumerator on every stored response.
        var length = 1 + 4;
        for (var i = 0; i < headers.Count; i++)
        {
            var (name, value) = headers[i];
            length += 8 + (2 * (name.Length + value.Length));
        }

        return length;
    }

    /// <summary>Writes the headers at the start of <paramref name="destination"/>, which holds at least <see cref="GetEncodedLength"/> bytes.</summary>
    public static void WriteHeaders(IReadOnlyList<KeyValuePair<string, string>> headers, Span<byte> destination)
    {
        destination[0] = Version;
        var span = destination[1..];
        BinaryPrimitives.WriteInt32LittleEndian(span, headers.Count);
        span = span[4..];
        for (var i = 0; i < headers.Count; i++)
        {
            var (name, value) = headers[i];
            span = Write(span, name);
            span = Write(span, value);
        }
    }

    public static KeyValuePair<string, string>[] DecodeHeaders(ReadOnlySpan<byte> data)
    {
        var headers = DecodeHeaders(data, out var consumed);
        if (consumed != data.Length)
        {
            throw new InvalidDataException("The stored response headers are corrupt.");
        }

        return headers;
    }

    /// <summary>Decodes headers written at the start of <paramref name="data"/>; <paramref name="consumed"/> is where they end.</summary>
    public static KeyValuePair<string, string>[] DecodeHeaders(ReadOnlySpan<byte> data, out int consumed)
    {
        var total = data.Length;
        if (data.Length < 5 || data[0] != Version)
        {
            throw new InvalidDataException("The stored response headers are not in a known format.");
        }

        var count = BinaryPrimitives.ReadInt32LittleEndian(data[1..]);
        data = data[5..];
        if (count < 0 || count > data.Length / 8)
        {
            throw new InvalidDataException("The stored response headers are corrupt.");
        }

        var headers = new KeyValuePair<string, string>[count];
        for (var i = 0; i < count; i++)
        {
            var name = Read(ref data);
            var value = Read(ref data);
            headers[i] = new(name, value);
        }

        consumed = total - data.Length;
        return headers;
    }

    private static Span<byte> Write(Span<byte> span, string text)
    {
        BinaryPrimitives.WriteInt32LittleEndian(span, text.Length);
        span = span[4..];
        foreach (var c in text)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(span, c);
            span = span[2..];
        }

        return span;
    }

    private static string Read(ref ReadOnlySpan<byte> data)
    {
        if (data.Length < 4)
        {
            throw new InvalidDataException("The stored response headers are corrupt.");
        }

        var length = BinaryPrimitives.ReadInt32LittleEndian(data);
        data = data[4..];
        if (length < 0 || length > data.Length / 2)
        {
            throw new InvalidDataException("The stored response headers are corrupt.");
        }

        var bytes = data[..(2 * length)];
        var text = BitConverter.IsLittleEndian
            ? new string(MemoryMarshal.Cast<byte, char>(bytes))
            : string.Create(length, bytes.ToArray(), static (chars, source) =>
            {
                for (var i = 0; i < chars.Length; i++)
                {
                    chars[i] = (char)BinaryPrimitives.ReadUInt16LittleEndian(source.AsSpan(2 * i));
                }
            });
        data = data[(2 * length)..];
        return text;
    }
}
