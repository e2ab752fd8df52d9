using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Idem;

/// <summary>
/// Owner tokens: unique per claim, which is all fencing needs; nobody outside the process ever supplies one, so they
/// need not be unpredictable. A random 64-bit prefix per process and a counter, instead of <see cref="Guid.NewGuid"/>,
/// whose cryptographic randomness is a system call on every claim.
/// </summary>
internal static class OwnerTokens
{
    private static readonly ulong Prefix = BinaryPrimitives.ReadUInt64LittleEndian(RandomNumberGenerator.GetBytes(8));
    private static long s_counter;

    public static Guid Next()
    {
        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, Prefix);
        BinaryPrimitives.WriteInt64LittleEndian(bytes[8..], Interlocked.Increment(ref s_counter));
        return new Guid(bytes);
    }
}
