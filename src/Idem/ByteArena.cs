using System.Buffers;
using System.Runtime.InteropServices;
using System.Text;

namespace Idem;

/// <summary>Where a run of bytes lives in a <see cref="ByteArena"/>. The default value is the empty run.</summary>
internal readonly record struct ArenaSpan(int Chunk, int Offset, int Length);

/// <summary>
/// Bump allocation of byte runs in a few large arrays, for data that lives long (retained idempotency records):
/// hundreds of thousands of records become a few dozen arrays the garbage collector neither traces nor copies
/// between generations (chunks grow to 1 MB and then sit on the large object heap). A run is never overwritten
/// once written: freed space is not reused inside a chunk; a chunk is dropped when none of its runs is live, and
/// memory handed out over it stays valid for as long as anyone holds it (the GC keeps the dropped array alive).
/// Not thread-safe: the owner serialises access.
/// </summary>
internal sealed class ByteArena
{
    internal const int FirstChunkSize = 4 * 1024;
    internal const int MaxChunkSize = 1024 * 1024;

    // Runs larger than this get an array of their own, so one big response cannot waste most of a chunk.
    private const int DedicatedThreshold = MaxChunkSize / 4;

    private readonly Stack<int> _freeChunkIndexes = new();
    private byte[]?[] _chunks = new byte[]?[4];
    private int[] _liveBytes = new int[4];
    private int _chunkSlotsUsed;
    private int _current = -1;
    private int _used;
    private int _nextChunkSize = FirstChunkSize;
    private long _totalLiveBytes;

    /// <summary>The bytes held by live chunks, free space included; for tests and diagnostics.</summary>
    public long ChunkBytes
    {
        get
        {
            long total = 0;
            foreach (var chunk in _chunks)
            {
                total += chunk?.Length ?? 0;
            }

            return total;
        }
    }

    public ArenaSpan Write(ReadOnlySpan<byte> bytes)
    {
        var span = Allocate(bytes.Length, out var destination);
        bytes.CopyTo(destination);
        return span;
    }

    public ArenaSpan Allocate(int length, out Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length == 0)
        {
            destination = [];
            return default;
        }

        if (length > DedicatedThreshold)
        {
            var dedicated = AddChunk(length);
            _liveBytes[dedicated] = length;
            _totalLiveBytes += length;
            destination = _chunks[dedicated];
            return new ArenaSpan(dedicated, 0, length);
        }

        if (_current < 0 || _chunks[_current]!.Length - _used < length)
        {
            StartChunk(length);
        }

        var offset = _used;

        // 8-byte alignment keeps char and long reads of stored runs aligned.
        _used = Math.Min(_chunks[_current]!.Length, (offset + length + 7) & ~7);
        _liveBytes[_current] += length;
        _totalLiveBytes += length;
        destination = _chunks[_current].AsSpan(offset, length);
        return new ArenaSpan(_current, offset, length);
    }

    public ReadOnlySpan<byte> Read(ArenaSpan span) =>
        span.Length == 0 ? [] : _chunks[span.Chunk].AsSpan(span.Offset, span.Length);

    public ReadOnlyMemory<byte> ReadMemory(ArenaSpan span) =>
        span.Length == 0 ? ReadOnlyMemory<byte>.Empty : _chunks[span.Chunk].AsMemory(span.Offset, span.Length);

    public void Free(ArenaSpan span)
    {
        if (span.Length == 0)
        {
            return;
        }

        _totalLiveBytes -= span.Length;
        if ((_liveBytes[span.Chunk] -= span.Length) == 0)
        {
            // The current chunk goes too: its free tail cannot be reused from the start (runs are never overwritten).
            if (span.Chunk == _current)
            {
                _current = -1;
            }

            DropChunk(span.Chunk);
        }

        if (_totalLiveBytes == 0)
        {
            // Emptied (every record purged): the next burst starts small again.
            _nextChunkSize = FirstChunkSize;
        }
    }

    private void StartChunk(int atLeast)
    {
        // The chunk being left stays while it holds live runs; Free drops it after the last one.
        // Chunks double from 4 KB, so a store that holds little stays small; a run never exceeds a chunk (see DedicatedThreshold).
        while (_nextChunkSize < atLeast)
        {
            _nextChunkSize *= 2;
        }

        _current = AddChunk(_nextChunkSize);
        _used = 0;
        _nextChunkSize = Math.Min(_nextChunkSize * 2, MaxChunkSize);
    }

    private int AddChunk(int size)
    {
        if (!_freeChunkIndexes.TryPop(out var index))
        {
            index = _chunkSlotsUsed++;
            if (index == _chunks.Length)
            {
                Array.Resize(ref _chunks, _chunks.Length * 2);
                Array.Resize(ref _liveBytes, _liveBytes.Length * 2);
            }
        }

        _chunks[index] = GC.AllocateUninitializedArray<byte>(size);
        _liveBytes[index] = 0;
        return index;
    }

    private void DropChunk(int index)
    {
        _chunks[index] = null;
        _freeChunkIndexes.Push(index);
    }
}

/// <summary>How an <see cref="ArenaText"/> holds its characters.</summary>
internal enum ArenaTextForm : byte
{
    /// <summary>One byte per character (UUIDs, most client keys).</summary>
    Ascii,

    /// <summary>The characters as UTF-16: anything that is not ASCII.</summary>
    Utf16,

    /// <summary>Lowercase hexadecimal decoded to its bytes: half the size of ASCII for the store's SHA-256 keys and fingerprints.</summary>
    LowerHex,
}

/// <summary>
/// A string kept in a <see cref="ByteArena"/> in the smallest of its forms. A string has exactly one form, so texts of
/// different forms never match and equal texts have equal bytes.
/// </summary>
internal readonly record struct ArenaText(ArenaSpan Span, ArenaTextForm Form)
{
    // Longer hexadecimal text is kept as ASCII, so comparisons can expand a stored run on the stack.
    private const int MaxLowerHexChars = 256;

    private static readonly SearchValues<char> LowerHexDigits = SearchValues.Create("0123456789abcdef");

    public static ArenaText Write(ByteArena arena, string text)
    {
        if (IsLowerHex(text))
        {
            var span = arena.Allocate(text.Length / 2, out var destination);
            Convert.FromHexString(text, destination, out _, out _);
            return new ArenaText(span, ArenaTextForm.LowerHex);
        }

        if (Ascii.IsValid(text))
        {
            var span = arena.Allocate(text.Length, out var destination);
            Ascii.FromUtf16(text, destination, out _);
            return new ArenaText(span, ArenaTextForm.Ascii);
        }

        return new ArenaText(arena.Write(MemoryMarshal.AsBytes(text.AsSpan())), ArenaTextForm.Utf16);
    }

    public bool Equals(ByteArena arena, ReadOnlySpan<char> text)
    {
        var bytes = arena.Read(Span);
        switch (Form)
        {
            case ArenaTextForm.Ascii:
                return bytes.Length == text.Length && Ascii.Equals(bytes, text);
            case ArenaTextForm.Utf16:
                return MemoryMarshal.Cast<byte, char>(bytes).SequenceEqual(text);
            default:
                if (text.Length != 2 * bytes.Length)
                {
                    return false;
                }

                // Re-encoding the stored bytes matches exactly the one string they came from (lowercase digits only).
                Span<char> hex = stackalloc char[MaxLowerHexChars];
                Convert.TryToHexStringLower(bytes, hex, out var written);
                return hex[..written].SequenceEqual(text);
        }
    }

    public string ToString(ByteArena arena)
    {
        var bytes = arena.Read(Span);
        return Form switch
        {
            ArenaTextForm.Ascii => Encoding.ASCII.GetString(bytes),
            ArenaTextForm.Utf16 => new string(MemoryMarshal.Cast<byte, char>(bytes)),
            _ => Convert.ToHexStringLower(bytes),
        };
    }

    private static bool IsLowerHex(string text) =>
        text.Length is > 0 and <= MaxLowerHexChars && text.Length % 2 == 0 && !text.AsSpan().ContainsAnyExcept(LowerHexDigits);
}
