namespace Idem.Tests;

public sealed class OwnerTokensTests
{
    [Fact]
    public async Task Tokens_taken_concurrently_are_all_distinct_and_never_empty()
    {
        var batches = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() => Enumerable.Range(0, 50_000).Select(_ => OwnerTokens.Next()).ToArray())));
        var all = batches.SelectMany(b => b).ToList();

        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.DoesNotContain(Guid.Empty, all);
    }
}
