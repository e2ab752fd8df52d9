using Microsoft.Extensions.Time.Testing;

namespace Idem.Tests;

/// <summary>
/// The in-memory store keeps record bytes in arenas instead of one object graph per record: these pin down that every
/// size round-trips exactly and that purged records give their memory back.
/// </summary>
public sealed class InMemoryStoreMemoryTests
{
    [Fact]
    public void Every_run_reads_back_exactly_whatever_its_size_relative_to_the_chunks()
    {
        var arena = new ByteArena();
        var random = new Random(7);
        int[] sizes = [0, 1, 7, ByteArena.FirstChunkSize - 1, ByteArena.FirstChunkSize, ByteArena.FirstChunkSize + 1, 3 * ByteArena.FirstChunkSize, (ByteArena.MaxChunkSize / 4) + 1, ByteArena.MaxChunkSize + 3];
        var written = new List<(ArenaSpan Span, byte[] Bytes)>();
        foreach (var size in sizes.Concat(Enumerable.Range(0, 2000).Select(_ => random.Next(0, 20_000))))
        {
            var bytes = new byte[size];
            random.NextBytes(bytes);
            written.Add((arena.Write(bytes), bytes));
        }

        Assert.All(written, w => Assert.Equal(w.Bytes, arena.Read(w.Span).ToArray()));
    }

    [Fact]
    public void Freeing_every_run_drops_every_chunk_and_memory_handed_out_stays_intact()
    {
        var arena = new ByteArena();
        var runs = Enumerable.Range(0, 5000).Select(i => arena.Write(new byte[1000 + (i % 100)])).ToList();
        var big = arena.Write(Enumerable.Repeat((byte)42, ByteArena.MaxChunkSize).ToArray());
        var handedOut = arena.ReadMemory(big);
        Assert.True(arena.ChunkBytes > 5_000_000);

        foreach (var run in runs.Append(big))
        {
            arena.Free(run);
        }

        Assert.Equal(0, arena.ChunkBytes);
        Assert.All(handedOut.ToArray(), b => Assert.Equal(42, b));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(5_000)]
    [InlineData(300_000)]
    [InlineData(2_000_000)]
    public async Task A_completed_response_of_any_size_replays_byte_for_byte(int bodyLength)
    {
        var store = new InMemoryIdempotencyStore(new FakeTimeProvider());
        var body = new byte[bodyLength];
        new Random(bodyLength).NextBytes(body);
        var owner = Guid.NewGuid();
        var retention = TimeSpan.FromHours(1);
        await store.TryClaimAsync(new ClaimRequest("key", "fingerprint", owner, TimeSpan.FromSeconds(30), retention), default);
        KeyValuePair<string, string>[] headers = [new("Content-Type", "application/octet-stream"), new("Location", "/things/é")];

        Assert.True(await store.CompleteAsync("key", owner, new StoredResponse(201, headers, body), retention, default));
        body.AsSpan().Clear(); // the store must have copied, not aliased, the caller's buffer
        var record = await store.GetAsync("key", default);

        Assert.Equal(201, record!.Response!.StatusCode);
        Assert.Equal(headers, record.Response.Headers);
        var expected = new byte[bodyLength];
        new Random(bodyLength).NextBytes(expected);
        Assert.Equal(expected, record.Response.Body.ToArray());
        Assert.Equal("fingerprint", record.Fingerprint);
    }

    [Theory]
    [InlineData("order-42", "ab12")] // ASCII: one byte per character in the arena
    [InlineData("commande-é", "empreinte-ü")] // otherwise UTF-16
    [InlineData("注文", "指紋")]
    public async Task Keys_and_fingerprints_read_back_exactly_and_differ_from_their_neighbours(string key, string fingerprint)
    {
        var store = new InMemoryIdempotencyStore(new FakeTimeProvider());
        var owner = Guid.NewGuid();
        var lease = TimeSpan.FromSeconds(30);
        var retention = TimeSpan.FromHours(1);

        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(key, fingerprint, owner, lease, retention), default)).Status);
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(key + "x", fingerprint, Guid.NewGuid(), lease, retention), default)).Status);
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(key[..^1], fingerprint, Guid.NewGuid(), lease, retention), default)).Status);
        var again = await store.TryClaimAsync(new ClaimRequest(key, fingerprint + "!", Guid.NewGuid(), lease, retention), default);

        Assert.Equal(ClaimStatus.InFlight, again.Status);
        Assert.Equal(fingerprint, again.Record!.Fingerprint);
        Assert.Equal(key, (await store.GetAsync(key, default))!.Key);
        Assert.True(await store.ReleaseAsync(key, owner, default));
        Assert.Null(await store.GetAsync(key, default));
        Assert.Equal(2, store.Count);
    }

    [Fact]
    public async Task Purging_expired_records_returns_their_memory_and_a_replay_in_hand_keeps_its_body()
    {
        var clock = new FakeTimeProvider();
        var store = new InMemoryIdempotencyStore(clock);
        var retention = TimeSpan.FromMinutes(1);
        for (var i = 0; i < 20_000; i++)
        {
            var owner = Guid.NewGuid();
            var key = $"key-{i}";
            await store.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), retention), default);
            await store.CompleteAsync(key, owner, new StoredResponse(200, null, Enumerable.Repeat((byte)(i % 251), 500).ToArray()), retention, default);
        }

        var inHand = (await store.GetAsync("key-7", default))!.Response!;
        var held = store.ArenaBytes;
        clock.Advance(retention + TimeSpan.FromSeconds(1));
        var purged = await PurgeAllAsync(store, batch: 1000);

        Assert.Equal(20_000, purged);
        Assert.Equal(0, store.Count);
        Assert.True(held > 10_000_000, $"{held} bytes held before the purge");
        Assert.Equal(0, store.ArenaBytes);
        Assert.All(inHand.Body.ToArray(), b => Assert.Equal(7, b));
    }

    [Theory]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")] // a store key: kept as 32 bytes
    [InlineData("ab")]
    [InlineData("ABCDEF")] // uppercase: kept as ASCII
    [InlineData("abc")] // odd length: ASCII
    [InlineData("0g")]
    [InlineData("clé")]
    public void Text_reads_back_exactly_and_matches_no_other_spelling(string text)
    {
        var arena = new ByteArena();
        var stored = ArenaText.Write(arena, text);

        Assert.Equal(text, stored.ToString(arena));
        Assert.True(stored.Equals(arena, text));
        foreach (var other in new[] { text.ToUpperInvariant(), text.ToLowerInvariant(), text + "0", text[..^1], "x" + text[1..] }.Where(o => o != text))
        {
            Assert.False(stored.Equals(arena, other), other);
        }
    }

    [Fact]
    public void A_lowercase_hex_key_takes_half_the_bytes_of_its_characters()
    {
        var arena = new ByteArena();
        var key = IdempotencyScope.ComputeStoreKey("alice", "POST /orders", "k-1");

        var stored = ArenaText.Write(arena, key);

        Assert.Equal(ArenaTextForm.LowerHex, stored.Form);
        Assert.Equal(32, stored.Span.Length);
    }

    [Fact]
    public async Task A_record_claimed_again_after_it_expired_replays_its_new_response_not_a_remembered_one()
    {
        var clock = new FakeTimeProvider();
        var store = new InMemoryIdempotencyStore(clock);
        var key = IdempotencyScope.ComputeStoreKey(string.Empty, "POST /orders", "k");
        var retention = TimeSpan.FromMinutes(1);
        var lease = TimeSpan.FromSeconds(30);

        var first = Guid.NewGuid();
        await store.TryClaimAsync(new ClaimRequest(key, "fp", first, lease, retention), default);
        await store.CompleteAsync(key, first, new StoredResponse(201, null, "first"u8.ToArray()), retention, default);
        Assert.Equal("first"u8.ToArray(), (await store.GetAsync(key, default))!.Response!.Body.ToArray()); // remembered for replays

        clock.Advance(retention + TimeSpan.FromSeconds(1));
        var second = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(key, "fp", second, lease, retention), default)).Status);
        await store.CompleteAsync(key, second, new StoredResponse(202, null, "second"u8.ToArray()), retention, default);

        var replay = await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), lease, retention), default);
        Assert.Equal(ClaimStatus.Completed, replay.Status);
        Assert.Equal(202, replay.Record!.Response!.StatusCode);
        Assert.Equal("second"u8.ToArray(), replay.Record.Response.Body.ToArray());
    }

    [Fact]
    public async Task Keys_completed_by_the_same_owner_token_replay_their_own_responses()
    {
        // Owner tokens are per claim in the executor, but a caller of the store may reuse one across keys.
        var store = new InMemoryIdempotencyStore(new FakeTimeProvider());
        var owner = Guid.NewGuid();
        var retention = TimeSpan.FromMinutes(1);
        var keys = Enumerable.Range(0, 2000).Select(i => IdempotencyScope.ComputeStoreKey(string.Empty, "op", $"k{i}")).ToArray();
        foreach (var key in keys)
        {
            await store.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), retention), default);
            await store.CompleteAsync(key, owner, new StoredResponse(200, [new("X-Key", key)], System.Text.Encoding.ASCII.GetBytes(key)), retention, default);
        }

        for (var round = 0; round < 2; round++)
        {
            foreach (var key in keys)
            {
                var record = (await store.GetAsync(key, default))!;
                Assert.Equal(key, record.Key);
                Assert.Equal(key, record.Response!.Headers.Single().Value);
                Assert.Equal(key, System.Text.Encoding.ASCII.GetString(record.Response.Body.Span));
            }
        }
    }

    [Fact]
    public async Task Purging_store_keys_finds_every_expired_record()
    {
        var clock = new FakeTimeProvider();
        var store = new InMemoryIdempotencyStore(clock);
        var retention = TimeSpan.FromMinutes(1);
        for (var i = 0; i < 5000; i++)
        {
            // Hex keys (kept as bytes), ASCII and UTF-16 keys, all of them purged and their bytes given back.
            var key = (i % 3) switch
            {
                0 => IdempotencyScope.ComputeStoreKey(string.Empty, "op", $"k{i}"),
                1 => $"Key-{i}",
                _ => $"clé-{i}",
            };
            await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), retention), default);
        }

        clock.Advance(retention + TimeSpan.FromSeconds(1));
        var purged = await PurgeAllAsync(store, batch: 700);

        Assert.Equal(5000, purged);
        Assert.Equal(0, store.Count);
        Assert.Equal(0, store.ArenaBytes);
    }

    private static async Task<int> PurgeAllAsync(InMemoryIdempotencyStore store, int batch)
    {
        var purged = 0;
        int removed;
        while ((removed = await store.PurgeExpiredAsync(batch, default)) > 0)
        {
            purged += removed;
        }

        return purged;
    }
}
