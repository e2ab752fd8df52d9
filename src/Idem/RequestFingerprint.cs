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
    // Small requests (nearly all) are hashed in one call over a pooled buffer: each incremental call into the
    // platform's crypto library has a fixed cost that dominated the fingerprint of a small JSON body.
    private const int OneShotLimit = 16 * 1024;

    private byte[] _pending = System.Buffers.ArrayPool<byte>.Shared.Rent(1024);
    private int _pendingLength;
    private IncrementalHash? _hash;
    private long _bodyLength;

    /// <summary>The number of body bytes appended so far.</summary>
    public long BodyLength => _bodyLength;

    /// <summary>Appends a named part, such as the method or the path.</summary>
    /// <param name="name">The part's name, so that values cannot slide between parts.</param>
    /// <param name="value">The part's value; <see langword="null"/> is distinct from empty.</param>
    public void AppendPart(string name, string? value)
    {
        AppendString(name);
        if (value is null)
        {
            Span<byte> prefix = stackalloc byte[sizeof(int)];
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(prefix, -1);
            Append(prefix);
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

        Append(bytes);
        _bodyLength += bytes.Length;
    }

    /// <summary>Returns the fingerprint as 64 lowercase hexadecimal characters, and starts over.</summary>
    public string Complete()
    {
        ObjectDisposedException.ThrowIf(_pending.Length == 0, this);
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        if (_hash is null)
        {
            Sha256.HashData(_pending.AsSpan(0, _pendingLength), hash);
        }
        else
        {
            _hash.AppendData(_pending, 0, _pendingLength);
            _hash.GetHashAndReset(hash);
        }

        _pendingLength = 0;
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
    public void Dispose()
    {
        _hash?.Dispose();
        if (_pending.Length != 0)
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(_pending);
            _pending = [];
        }
    }

    private void AppendString(string value)
    {
        var byteCount = Encoding.UTF8.GetByteCount(value);
        Span<byte> prefix = stackalloc byte[sizeof(int)];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(prefix, byteCount);
        Append(prefix);
        if (Reserve(byteCount))
        {
            _pendingLength += Encoding.UTF8.GetBytes(value, _pending.AsSpan(_pendingLength));
        }
        else
        {
            Append(Encoding.UTF8.GetBytes(value));
        }
    }

    private void Append(ReadOnlySpan<byte> bytes)
    {
        if (Reserve(bytes.Length))
        {
            bytes.CopyTo(_pending.AsSpan(_pendingLength));
            _pendingLength += bytes.Length;
            return;
        }

        // Too large for one shot: hash incrementally from here on.
        _hash ??= IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        _hash.AppendData(_pending, 0, _pendingLength);
        _pendingLength = 0;
        _hash.AppendData(bytes);
    }

    // Makes room for count more pending bytes when the total stays under the one-shot limit.
    private bool Reserve(int count)
    {
        ObjectDisposedException.ThrowIf(_pending.Length == 0, this);
        var needed = _pendingLength + count;
        if (needed > OneShotLimit)
        {
            return false;
        }

        if (needed > _pending.Length)
        {
            var larger = System.Buffers.ArrayPool<byte>.Shared.Rent(Math.Max(needed, _pending.Length * 2));
            _pending.AsSpan(0, _pendingLength).CopyTo(larger);
            System.Buffers.ArrayPool<byte>.Shared.Return(_pending);
            _pending = larger;
        }

        return true;
    }
}
