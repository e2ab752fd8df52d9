namespace Idem;

/// <summary>
/// The persisted form of a stored response's headers, for store authors: a store that keeps headers as these bytes
/// reads and writes exactly what the built-in SQLite and Redis stores do, so records move between nodes and releases.
/// </summary>
/// <remarks>
/// The form starts with a version byte (1), then a little-endian int32 count, then per header the name and the value,
/// each as an int32 length in UTF-16 code units followed by those code units (little-endian). Order and repeated names
/// are kept. <see cref="Decode"/> also reads the compact form (version 2) the in-memory store uses, so anything this
/// library wrote stays readable.
/// </remarks>
public static class StoredResponseHeaders
{
    /// <summary>Encodes <paramref name="headers"/> in the persisted form.</summary>
    /// <param name="headers">The response headers to store, in order; a name may repeat.</param>
    /// <returns>A new array holding the encoded headers.</returns>
    public static byte[] Encode(IReadOnlyList<KeyValuePair<string, string>> headers)
    {
        ArgumentNullException.ThrowIfNull(headers);
        return ResponseCodec.EncodeHeaders(headers);
    }

    /// <summary>Decodes headers that <see cref="Encode"/> (or any release of this library) wrote.</summary>
    /// <param name="data">Exactly the encoded bytes, nothing before or after.</param>
    /// <returns>The headers in the order they were stored.</returns>
    /// <exception cref="InvalidDataException">The bytes are not a known form or are corrupt.</exception>
    public static KeyValuePair<string, string>[] Decode(ReadOnlySpan<byte> data) => ResponseCodec.DecodeHeaders(data);
}
