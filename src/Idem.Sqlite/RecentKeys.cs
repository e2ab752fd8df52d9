namespace Idem.Sqlite;

/// <summary>
/// A lossy, lock-free memory of keys this process has claimed recently: a hint for choosing the cheaper path, never
/// an answer. Forgetting a key (its slot reused) or a false "seen" (two keys with one 32-bit hash in one slot) only
/// picks the slower of two correct paths. Fixed size: 64K slots, 256 KB.
/// </summary>
internal sealed class RecentKeys
{
    private const int SlotBits = 16;
    private readonly uint[] _slots = new uint[1 << SlotBits];

    /// <summary>Remembers <paramref name="key"/>; returns whether it was remembered already.</summary>
    public bool Remember(string key)
    {
        var hash = Hash(key);
        ref var slot = ref _slots[hash >> (32 - SlotBits)];
        if (Volatile.Read(ref slot) == hash)
        {
            return true;
        }

        Volatile.Write(ref slot, hash);
        return false;
    }

    // The slot comes from the high bits; the low bit is forced so that a hash is never 0, the empty slot.
    private static uint Hash(string key) => (uint)key.GetHashCode(StringComparison.Ordinal) | 1;
}
