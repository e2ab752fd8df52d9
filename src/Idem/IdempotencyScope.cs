using System.Buffers;
using System.Security.Cryptography;
using System.Text;

namespace Idem;

/// <summary>
/// Derives the key under which a record is stored from the principal, the operation and the client's key.
/// The result is a hash: neither the principal (which may be a credential) nor the raw key is ever stored.
/// </summary>
public static class IdempotencyScope
{
    /// <summary>
    /// Computes the store key for <paramref name="key"/> sent by <paramref name="principal"/> to <paramref name="operation"/>.
    /// </summary>
    /// <param name="principal">Who sent the request; an empty string for anonymous callers.</param>
    /// <param name="operation">What the key applies to, for example <c>POST /orders</c> or a worker's job name.</param>
    /// <param name="key">The client's idempotency key.</param>
    /// <returns>A 64-character lowercase hexadecimal SHA-256 digest.</returns>
    public static string ComputeStoreKey(string principal, string operation, string key) =>
        Compute(principal, operation, route: null, key);

    /// <summary>
    /// The store key for an HTTP operation, <paramref name="method"/> and <paramref name="route"/> joined by a space
    /// (<c>POST /orders</c>), without building that string: the same key as
    /// <see cref="ComputeStoreKey(string, string, string)"/> with the joined operation.
    /// </summary>
    /// <param name="principal">Who sent the request; an empty string for anonymous callers.</param>
    /// <param name="method">The HTTP method, for example <c>POST</c>.</param>
    /// <param name="route">The route template or path the key applies to, for example <c>/orders</c>.</param>
    /// <param name="key">The client's idempotency key.</param>
    /// <returns>A 64-character lowercase hexadecimal SHA-256 digest.</returns>
    public static string ComputeHttpStoreKey(string principal, string method, string route, string key)
    {
        ArgumentNullException.ThrowIfNull(route);
        return Compute(principal, method, route, key);
    }

    /// <summary>
    /// The hash under which a principal is kept in <see cref="IdempotencyRecordMetadata.PrincipalHash"/>: the first 32
    /// lowercase hexadecimal digits (128 bits) of SHA-256 over a domain tag and the principal, so it never equals a store
    /// key or another system's hash of the same text. <c>idem keys list --principal</c> computes the same.
    /// </summary>
    /// <param name="principal">Who sent the request; an empty string for anonymous callers.</param>
    /// <returns>32 lowercase hexadecimal digits.</returns>
    public static string ComputePrincipalHash(string principal)
    {
        ArgumentNullException.ThrowIfNull(principal);

        // Anonymous callers all share one hash: computed once, not on every request that carries no user.
        return principal.Length == 0 ? AnonymousPrincipalHash.Value : HashPrincipal(principal);
    }

    private static readonly Lazy<string> AnonymousPrincipalHash = new(() => HashPrincipal(string.Empty));

    private static string HashPrincipal(string principal)
    {
        var maxBytes = PrincipalDomain.Length + Encoding.UTF8.GetMaxByteCount(principal.Length);
        var rented = ArrayPool<byte>.Shared.Rent(maxBytes);
        try
        {
            PrincipalDomain.CopyTo(rented);
            var written = PrincipalDomain.Length + Encoding.UTF8.GetBytes(principal, rented.AsSpan(PrincipalDomain.Length));
            Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
            Sha256.HashData(rented.AsSpan(0, written), hash);
            return Convert.ToHexStringLower(hash[..16]);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    // Domain separation: the principal hash is never the hash of a store key's inputs or of another system's text.
    private static ReadOnlySpan<byte> PrincipalDomain => "idem.principal\0"u8;

    // The operation is `operation`, or `operation + " " + route` when a route is given.
    private static string Compute(string principal, string operation, string? route, string key)
    {
        ArgumentNullException.ThrowIfNull(principal);
        ArgumentNullException.ThrowIfNull(operation);
        ArgumentNullException.ThrowIfNull(key);

        // Length-prefixing each part keeps ("ab","c") and ("a","bc") apart.
        var operationLength = operation.Length + (route is null ? 0 : 1 + route.Length);
        var maxBytes = 3 * sizeof(int) + Encoding.UTF8.GetMaxByteCount(principal.Length + operationLength + key.Length);
        var rented = ArrayPool<byte>.Shared.Rent(maxBytes);
        try
        {
            var written = 0;
            written += WritePart(rented.AsSpan(written), principal);
            written += route is null ? WritePart(rented.AsSpan(written), operation) : WriteJoinedPart(rented.AsSpan(written), operation, route);
            written += WritePart(rented.AsSpan(written), key);
            Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
            Sha256.HashData(rented.AsSpan(0, written), hash);
            return Convert.ToHexStringLower(hash);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private static int WriteJoinedPart(Span<byte> destination, string first, string second)
    {
        var content = destination[sizeof(int)..];
        var length = Encoding.UTF8.GetBytes(first, content);
        content[length++] = (byte)' ';
        length += Encoding.UTF8.GetBytes(second, content[length..]);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(destination, length);
        return sizeof(int) + length;
    }

    private static int WritePart(Span<byte> destination, string part)
    {
        var length = Encoding.UTF8.GetBytes(part, destination[sizeof(int)..]);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(destination, length);
        return sizeof(int) + length;
    }
}
