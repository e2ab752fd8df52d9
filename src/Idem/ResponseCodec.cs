using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace Idem;

/// <summary>
/// The stored forms of response headers, order and repeated names included. Both start with a version byte.
/// <list type="bullet">
/// <item>Version 1, the persisted form (SQLite, Redis): a little-endian int32 count, then per header the name and the
/// value, each as an int32 length in UTF-16 code units followed by those code units (little-endian). UTF-16 keeps any
/// .NET string exactly. Stores that other processes read keep writing it, so that nodes of an older release, during a
/// rolling upgrade, read what newer nodes write.</item>
/// <item>Version 2, the compact form for the in-memory store (no other reader): a 7-bit encoded count, then per
/// header the name and the value, each as a 7-bit encoded length followed by that many ASCII bytes. Written only when
/// every name and value is ASCII (what Kestrel sends by default); otherwise the store falls back to version 1. It holds
/// a typical Location header in under half the bytes, and a retained record's size is what a busy store pays for.</item>
/// </list>
/// </summary>
internal static class ResponseCodec
{
    private const byte Version = 1;
    private const byte CompactVersion = 2;

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

    /// <summary>
    /// How many bytes <see cref="WriteCompact"/> writes for <paramref name="headers"/>; <paramref name="ascii"/> says
    /// whether that is the compact form (every name and value is ASCII) or version 1.
    /// </summary>
    public static int GetCompactLength(IReadOnlyList<KeyValuePair<string, string>> headers, out bool ascii)
    {
        var length = 1 + SevenBitLength((uint)headers.Count);
        for (var i = 0; i < headers.Count; i++)
        {
            var (name, value) = headers[i];
            if (!Ascii.IsValid(name) || !Ascii.IsValid(value))
            {
                ascii = false;
                return GetEncodedLength(headers);
            }

            length += SevenBitLength((uint)name.Length) + name.Length + SevenBitLength((uint)value.Length) + value.Length;
        }

        ascii = true;
        return length;
    }

    /// <summary>Writes the headers in the form <see cref="GetCompactLength"/> chose, at the start of <paramref name="destination"/>.</summary>
    public static void WriteCompact(IReadOnlyList<KeyValuePair<string, string>> headers, bool ascii, Span<byte> destination)
    {
        if (!ascii)
        {
            WriteHeaders(headers, destination);
            return;
        }

        destination[0] = CompactVersion;
        var written = 1 + WriteSevenBit(destination[1..], (uint)headers.Count);
        for (var i = 0; i < headers.Count; i++)
        {
            var (name, value) = headers[i];
            written += WriteAscii(destination[written..], name);
            written += WriteAscii(destination[written..], value);
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
        if (data.Length >= 2 && data[0] == CompactVersion)
        {
            return DecodeCompact(data, out consumed);
        }

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

    private static KeyValuePair<string, string>[] DecodeCompact(ReadOnlySpan<byte> data, out int consumed)
    {
        var offset = 1;
        var count = ReadSevenBit(data, ref offset);
        if (count > (data.Length - offset) / 2)
        {
            throw new InvalidDataException("The stored response headers are corrupt.");
        }

        var headers = new KeyValuePair<string, string>[count];
        for (var i = 0; i < headers.Length; i++)
        {
            var name = ReadAscii(data, ref offset);
            var value = ReadAscii(data, ref offset);
            headers[i] = new(name, value);
        }

        consumed = offset;
        return headers;
    }

    private static int WriteAscii(Span<byte> destination, string text)
    {
        var prefix = WriteSevenBit(destination, (uint)text.Length);
        Ascii.FromUtf16(text, destination[prefix..], out var written);
        return prefix + written;
    }

    private static string ReadAscii(ReadOnlySpan<byte> data, ref int offset)
    {
        var length = ReadSevenBit(data, ref offset);
        if (length > data.Length - offset)
        {
            throw new InvalidDataException("The stored response headers are corrupt.");
        }

        var bytes = data.Slice(offset, length);
        offset += length;
        return Encoding.ASCII.GetString(bytes);
    }

    private static int SevenBitLength(uint value) => value < 0x80 ? 1 : value < 0x4000 ? 2 : value < 0x20_0000 ? 3 : value < 0x1000_0000 ? 4 : 5;

    private static int WriteSevenBit(Span<byte> destination, uint value)
    {
        var i = 0;
        while (value >= 0x80)
        {
            destination[i++] = (byte)(value | 0x80);
            value >>= 7;
        }

        destination[i++] = (byte)value;
        return i;
    }

    private static int ReadSevenBit(ReadOnlySpan<byte> data, ref int offset)
    {
        uint value = 0;
        for (var shift = 0; shift < 35; shift += 7)
        {
            if (offset >= data.Length)
            {
                break;
            }

            var b = data[offset++];
            if (shift == 28 && b > 0x07)
            {
                break; // the fifth group holds the top bits of a non-negative int only; more would be dropped or negative
            }

            value |= (uint)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return (int)value;
            }
        }

        throw new InvalidDataException("The stored response headers are corrupt.");
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
