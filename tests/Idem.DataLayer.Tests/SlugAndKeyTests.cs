using Xunit;

namespace Idem.DataLayer.Tests;

public sealed class SlugAndKeyTests
{
    [Theory]
    [InlineData("My Community", "my-community")]
    [InlineData("Café Zürich", "cafe-zurich")]
    [InlineData("  --Hello,   World!!  ", "hello-world")]
    [InlineData("Ελληνικά Νέα", "ellinika-nea")]
    [InlineData("北京 meetup", "beijing-meetup")]
    [InlineData("Room 101", "room-101")]
    public void Names_become_ascii_slugs(string name, string slug) => Assert.Equal(slug, Slug.FromName(name));

    [Theory]
    [InlineData("!!!")]
    [InlineData("   ")]
    [InlineData("---")]
    public void A_name_without_letters_or_digits_is_refused_or_gets_the_fallback(string name)
    {
        var error = Assert.Throws<ArgumentException>(() => Slug.FromName(name));
        Assert.Contains("no letters or digits", error.Message);
        Assert.Equal("item", Slug.FromName(name, new SlugOptions { Fallback = "Item" }));
    }

    [Fact]
    public void A_long_name_is_cut_and_the_suffix_never_is()
    {
        var options = new SlugOptions { MaxLength = 10 };
        var baseSlug = Slug.FromName("Abcdefghij klmnop", options);
        Assert.Equal("abcdefghij", baseSlug);
        Assert.Equal("abcdefgh-1", Slug.WithSuffix(baseSlug, 1, options.MaxLength));
        Assert.Equal("abcdefg-10", Slug.WithSuffix(baseSlug, 10, options.MaxLength));
        Assert.Equal("abc-123456", Slug.WithSuffix(baseSlug, 123456, options.MaxLength));
        // A cut that ends on a dash is trimmed: "my-community" cut to 3 is "my", not "my-".
        Assert.Equal("my-123456", Slug.WithSuffix("my-community", 123456, 10));
        Assert.Equal("my-community", Slug.FromName("My Community!", new SlugOptions { MaxLength = 13 }));
        Assert.Equal("my-commu", Slug.FromName("My Community", new SlugOptions { MaxLength = 8 }));
        Assert.Throws<ArgumentException>(() => Slug.WithSuffix("abc", 12345678, 8));
    }

    [Fact]
    public void A_set_key_is_the_same_for_any_order_and_distinct_sets_never_share_one()
    {
        Assert.Equal("alice,bob", NaturalKey.FromSet(["bob", "alice"]));
        Assert.Equal("alice,bob", NaturalKey.FromSet(["alice", "bob", "bob"]));
        Assert.NotEqual(NaturalKey.FromSet(["a,b", "c"]), NaturalKey.FromSet(["a", "b,c"]));
        Assert.Equal(@"a\,b,c", NaturalKey.FromSet(["c", "a,b"]));
    }

    [Fact]
    public void A_set_key_past_its_maximum_length_is_a_clear_argument_exception()
    {
        var members = Enumerable.Range(0, 100).Select(i => "participant-" + i).ToArray();
        var error = Assert.Throws<ArgumentException>(() => NaturalKey.FromSet(members));
        Assert.Contains("longer than the maximum of 512", error.Message);
        Assert.Equal(NaturalKey.DefaultMaxLength, 512);
        Assert.Throws<ArgumentException>(() => NaturalKey.FromSet(["ab", "cd"], maxLength: 4));
        Assert.Equal("ab,cd", NaturalKey.FromSet(["cd", "ab"], maxLength: 5));
        Assert.Throws<ArgumentException>(() => NaturalKey.FromSet(["a", ""]));
        Assert.Throws<ArgumentException>(() => NaturalKey.FromSet([]));
    }
}
