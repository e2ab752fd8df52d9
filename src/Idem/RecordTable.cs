using System.Runtime.CompilerServices;

namespace Idem;

/// <summary>
/// A hash table of string keys kept in a <see cref="ByteArena"/>, for the in-memory store's shards. Open addressing
/// with linear probing over one array of 64-bit slots, each the key's full 32-bit hash beside its entry's index:
/// deciding that a key is new reads only that array, which every operation keeps hot, and never an existing entry. In
/// a table of hundreds of thousands of retained records those entries are cold memory, and a chained table reads one
/// for about every second new key. Entries live in pages that are never copied as the table grows (only the slot
/// array is rebuilt, from the hashes it holds), and a removed entry's place is reused.
/// Not thread-safe: the owner serialises access.
/// </summary>
/// <typeparam name="TValue">What each key maps to.</typeparam>
internal sealed class RecordTable<TValue>(ByteArena arena)
    where TValue : struct
{
    private const int PageShift = 10;
    private const int PageSize = 1 << PageShift;
    private const int MinimumSlots = 16;

    private readonly Stack<int> _freeEntries = new();
    private ulong[] _slots = new ulong[MinimumSlots]; // hash << 32 | (entry index + 1); 0 is empty
    private int _slotShift = 32 - 4; // 32 - log2(slot count): home slots come from the hash's top bits
    private Entry[][] _pages = [new Entry[16]];
    private int _entryCount; // entries ever handed out, live or free: the high-water mark

    /// <summary>The number of keys held.</summary>
    public int Count { get; private set; }

    /// <summary>Every entry index ever handed out is below this; <see cref="IsLive"/> says which hold a key.</summary>
    public int HighWater => _entryCount;

    /// <summary>The value for <paramref name="key"/>, or a null reference when it is absent.</summary>
    public ref TValue GetValueRefOrNullRef(string key, int hash)
    {
        var slot = FindSlot(key, hash);
        return ref slot < 0 ? ref Unsafe.NullRef<TValue>() : ref EntryAt(SlotEntry(_slots[slot])).Value;
    }

    /// <summary>The value for <paramref name="key"/>; a default one, with the key copied into the arena, when it was absent.</summary>
    public ref TValue GetValueRefOrAddDefault(string key, int hash, out bool exists)
    {
        var slot = FindSlot(key, hash);
        if (slot >= 0)
        {
            exists = true;
            return ref EntryAt(SlotEntry(_slots[slot])).Value;
        }

        // At most half full: probes stay short, and the one that finds a key absent ends at an empty slot soon.
        if ((Count + 1) * 2 > _slots.Length)
        {
            Grow();
        }

        var index = _freeEntries.Count > 0 ? _freeEntries.Pop() : NewEntryIndex();
        ref var entry = ref EntryAt(index);
        entry = new Entry { Key = ArenaText.Write(arena, key), Hash = hash, Live = true };
        _slots[EmptySlotFor(hash)] = Pack(hash, index);
        Count++;
        exists = false;
        return ref entry.Value;
    }

    /// <summary>Removes <paramref name="key"/> and frees its characters; <paramref name="removed"/> is what it mapped to.</summary>
    public bool Remove(string key, int hash, out TValue removed)
    {
        var slot = FindSlot(key, hash);
        if (slot < 0)
        {
            removed = default;
            return false;
        }

        removed = EntryAt(SlotEntry(_slots[slot])).Value;
        RemoveSlot(slot);
        return true;
    }

    /// <summary>Whether the entry at <paramref name="index"/> (below <see cref="HighWater"/>) holds a key.</summary>
    public bool IsLive(int index) => EntryAt(index).Live;

    /// <summary>The value of the live entry at <paramref name="index"/>.</summary>
    public ref TValue ValueAt(int index) => ref EntryAt(index).Value;

    /// <summary>Removes the live entry at <paramref name="index"/> and frees its key's characters.</summary>
    public void RemoveAt(int index)
    {
        var hash = EntryAt(index).Hash;
        var target = Pack(hash, index);
        var mask = _slots.Length - 1;
        for (int slot = Home(hash), probed = 0; probed < _slots.Length; slot = (slot + 1) & mask, probed++)
        {
            if (_slots[slot] == target)
            {
                RemoveSlot(slot);
                return;
            }
        }

        throw new InvalidOperationException($"Entry {index} is not live.");
    }

    private static ulong Pack(int hash, int index) => ((ulong)(uint)hash << 32) | (uint)(index + 1);

    private static int SlotEntry(ulong slot) => (int)(uint)slot - 1;

    private static int SlotHash(ulong slot) => (int)(slot >> 32);

    // Fibonacci hashing: the store picks shards by the hash's low bits, so every key of a shard shares them.
    private int Home(int hash) => (int)(((uint)hash * 2654435769u) >> _slotShift);

    private ref Entry EntryAt(int index) => ref _pages[index >> PageShift][index & (PageSize - 1)];

    private int FindSlot(string key, int hash)
    {
        var mask = _slots.Length - 1;
        for (var slot = Home(hash); ; slot = (slot + 1) & mask)
        {
            var value = _slots[slot];
            if (value == 0)
            {
                return -1;
            }

            // The entry is read only when its full hash matches: for a new key, almost never.
            if (SlotHash(value) == hash && EntryAt(SlotEntry(value)).Key.Equals(arena, key))
            {
                return slot;
            }
        }
    }

    private int EmptySlotFor(int hash)
    {
        var mask = _slots.Length - 1;
        var slot = Home(hash);
        while (_slots[slot] != 0)
        {
            slot = (slot + 1) & mask;
        }

        return slot;
    }

    private void RemoveSlot(int slot)
    {
        var index = SlotEntry(_slots[slot]);
        ref var entry = ref EntryAt(index);
        arena.Free(entry.Key.Span);
        entry = default;
        _freeEntries.Push(index);
        Count--;

        // Backward-shift deletion: later members of the probe run move into the hole when their home allows, so no
        // tombstones are left and a run never breaks before a key that belongs to it.
        var mask = _slots.Length - 1;
        var hole = slot;
        for (var next = (hole + 1) & mask; _slots[next] != 0; next = (next + 1) & mask)
        {
            var home = Home(SlotHash(_slots[next]));
            var stays = hole <= next ? hole < home && home <= next : hole < home || home <= next;
            if (!stays)
            {
                _slots[hole] = _slots[next];
                hole = next;
            }
        }

        _slots[hole] = 0;
    }

    private void Grow()
    {
        var old = _slots;
        _slots = new ulong[old.Length * 2];
        _slotShift--;
        foreach (var value in old)
        {
            if (value != 0)
            {
                _slots[EmptySlotFor(SlotHash(value))] = value;
            }
        }
    }

    private int NewEntryIndex()
    {
        var index = _entryCount++;
        var page = index >> PageShift;
        if (page == 0 && index == _pages[0].Length)
        {
            // The first page starts small and doubles up to a full page, so a store that holds little stays small.
            Array.Resize(ref _pages[0], _pages[0].Length * 2);
        }
        else if (page > 0 && (index & (PageSize - 1)) == 0)
        {
            if (page == _pages.Length)
            {
                Array.Resize(ref _pages, _pages.Length * 2);
            }

            _pages[page] = new Entry[PageSize];
        }

        return index;
    }

    private struct Entry
    {
        public ArenaText Key;
        public int Hash;
        public bool Live;
        public TValue Value;
    }
}
