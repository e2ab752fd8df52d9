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

    public bool Contains(string key)
    {
        var hash = Hash(key);
        return Volatile.Read(ref _slots[hash >> (32 - SlotBits)]) == hash;
    }

    public void Add(string key)
    {
        var hash = Hash(key);
        Volatile.Write(ref _slots[hash >> (32 - SlotBits)], hash);
    }

    // The slot comes from the high bits; the low bit is forced so that a hash is never 0, the empty slot.
    private static uint Hash(string key) => (uint)key.GetHashCode(StringComparison.Ordinal) | 1;
}
