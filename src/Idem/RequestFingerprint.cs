using System.Security.Cryptography;
using System.Text;

namespace Idem;

/// <summary>
/// Builds the SHA-256 fingerprint of a request: its parts (method, path, query, content type, chosen headers)
/// and its body bytes. The same key sent with another fingerprint is a client error (422), never a replay.
/// </summary>
/// <remarks>Not thread-safe; dispose it, or call <see cref="Complete"/>, once.</remarks>
public sealed class RequestFingerprint : IDisposable
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _bodyLength;

    /// <summary>The number of body bytes appended so far.</summary>
    public long BodyLength => _bodyLength;

    /// <summary>Appends a named part, such as the method or the path.</summary>
    /// <param name="name">The part's name, so that values cannot slide between parts.</param>
    /// <param name="value">The part's value; <see langword="null"/> is distinct from empty.</param>
    public void AppendPart(string name, string? value)
    {
        Span<byte> prefix = stackalloc byte[sizeof(int)];
        AppendString(name);
        if (value is null)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(prefix, -1);
            _hash.AppendData(prefix);
            return;
        }

        AppendString(value);
    }

    /// <summary>Appends body bytes; call as many times as the body arrives in pieces.</summary>
    public void AppendBody(ReadOnlySpan<byte> bytes)
    {
        // An empty piece adds nothing: otherwise it would write the body marker twice and change the fingerprint.
        if (bytes.IsEmpty)
        {
            return;
        }

        if (_bodyLength == 0)
        {
            AppendString("body");
        }

        _hash.AppendData(bytes);
        _bodyLength += bytes.Length;
    }

    /// <summary>Returns the fingerprint as 64 lowercase hexadecimal characters.</summary>
    public string Complete()
    {
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        _hash.GetHashAndReset(hash);
        _bodyLength = 0;
        return Convert.ToHexStringLower(hash);
    }

    /// <summary>Computes the fingerprint of an operation name and a payload in one call.</summary>
    public static string Compute(string operation, ReadOnlySpan<byte> payload)
    {
        using var fingerprint = new RequestFingerprint();
        fingerprint.AppendPart("operation", operation);
        fingerprint.AppendBody(payload);
        return fingerprint.Complete();
    }

    /// <inheritdoc />
    public void Dispose() => _hash.Dispose();

    private void AppendString(string value)
    {
        var byteCount = Encoding.UTF8.GetByteCount(value);
        Span<byte> buffer = byteCount <= 256 ? stackalloc byte[sizeof(int) + 256] : new byte[sizeof(int) + byteCount];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(buffer, byteCount);
        Encoding.UTF8.GetBytes(value, buffer[sizeof(int)..]);
        _hash.AppendData(buffer[..(sizeof(int) + byteCount)]);
    }
}
