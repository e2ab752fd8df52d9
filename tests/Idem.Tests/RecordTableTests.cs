namespace Idem.Tests;

/// <summary>The in-memory store's shard table, checked against <see cref="Dictionary{TKey, TValue}"/> as the model.</summary>
public sealed class RecordTableTests
{
    [Theory]
    [InlineData(1, 200)] // a few keys, many collisions of their probe runs
    [InlineData(2, 5_000)]
    [InlineData(3, 60_000)] // past the first page of entries and many slot-array doublings
    public void Random_adds_lookups_and_removals_agree_with_a_dictionary(int seed, int keySpace)
    {
        var random = new Random(seed);
        var arena = new ByteArena();
        var table = new RecordTable<long>(arena);
        var model = new Dictionary<string, long>();
        var keys = Enumerable.Range(0, keySpace).Select(i => (i % 3) switch
        {
            0 => IdempotencyScope.ComputeStoreKey(string.Empty, "op", $"k{i}"),
            1 => $"Key-{i}",
            _ => $"clé-{i}",
        }).ToArray();

        for (var step = 0; step < 4 * keySpace; step++)
        {
            var key = keys[random.Next(keys.Length)];
            var hash = key.GetHashCode(StringComparison.Ordinal);
            switch (random.Next(10))
            {
                case < 5:
                    ref var value = ref table.GetValueRefOrAddDefault(key, hash, out var exists);
                    Assert.Equal(model.ContainsKey(key), exists);
                    Assert.Equal(exists ? model[key] : 0, value);
                    value = step;
                    model[key] = step;
                    break;
                case < 8:
                    Assert.Equal(model.Remove(key, out var expected), table.Remove(key, hash, out var removed));
                    Assert.Equal(expected, removed);
                    break;
                default:
                    ref var found = ref table.GetValueRefOrNullRef(key, hash);
                    Assert.Equal(model.TryGetValue(key, out var stored), !System.Runtime.CompilerServices.Unsafe.IsNullRef(ref found));
                    if (!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref found))
                    {
                        Assert.Equal(stored, found);
                    }

                    break;
            }

            Assert.Equal(model.Count, table.Count);
        }

        // Removing by entry index (how the store purges) finds every key and gives every byte back.
        var live = 0;
        for (var index = 0; index < table.HighWater; index++)
        {
            if (table.IsLive(index))
            {
                live++;
                table.RemoveAt(index);
            }
        }

        Assert.Equal(model.Count, live);
        Assert.Equal(0, table.Count);
        Assert.All(keys, key => Assert.True(System.Runtime.CompilerServices.Unsafe.IsNullRef(ref table.GetValueRefOrNullRef(key, key.GetHashCode(StringComparison.Ordinal)))));
        Assert.Equal(0, arena.ChunkBytes);
    }

    [Fact]
    public void Keys_whose_hashes_collide_are_told_apart_by_their_characters()
    {
        // The same hash for every key: every probe run is one long run, and only the characters decide.
        var table = new RecordTable<int>(new ByteArena());
        for (var i = 0; i < 300; i++)
        {
            table.GetValueRefOrAddDefault($"k{i}", 42, out var exists) = i;
            Assert.False(exists);
        }

        for (var i = 0; i < 300; i += 2)
        {
            Assert.True(table.Remove($"k{i}", 42, out var removed));
            Assert.Equal(i, removed);
        }

        for (var i = 0; i < 300; i++)
        {
            ref var value = ref table.GetValueRefOrNullRef($"k{i}", 42);
            Assert.Equal(i % 2 == 1, !System.Runtime.CompilerServices.Unsafe.IsNullRef(ref value));
            if (i % 2 == 1)
            {
                Assert.Equal(i, value);
            }
        }
    }
}
