using System.Security.Cryptography;

namespace Idem.Tests;

public sealed class Sha256Tests
{
    [Fact]
    public async Task The_reused_digest_gives_what_a_fresh_one_gives_on_every_thread()
    {
        // Sizes around the block and padding boundaries; many threads at once, each reusing its own digest.
        int[] sizes = [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 20_000];
        await Task.WhenAll(Enumerable.Range(0, 8).Select(t => Task.Run(() =>
        {
            var random = new Random(t);
            Span<byte> actual = stackalloc byte[32];
            for (var i = 0; i < 2000; i++)
            {
                var data = new byte[sizes[i % sizes.Length]];
                random.NextBytes(data);
                Sha256.HashData(data, actual);
                Assert.Equal(SHA256.HashData(data), actual.ToArray());
            }
        })));
    }
}
