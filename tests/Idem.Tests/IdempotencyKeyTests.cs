namespace Idem.Tests;

public sealed class IdempotencyKeyTests
{
    [Theory]
    [InlineData("a")]
    [InlineData("8e03978e-40d5-43e8-bc93-6894a57f9324")]
    [InlineData("a\"b")]
    [InlineData("abc\"")]
    public void Accepts_raw_keys(string value)
    {
        Assert.True(IdempotencyKey.TryParse(value, out var key, out var error));
        Assert.Equal(value, key);
        Assert.Null(error);
    }

    [Fact]
    public void Accepts_255_characters()
    {
        var value = new string('k', 255);
        Assert.True(IdempotencyKey.TryParse(value, out var key, out _));
        Assert.Equal(value, key);
    }

    [Fact]
    public void Accepts_every_visible_ascii_character()
    {
        var all = new string(Enumerable.Range(0x21, 0x7E - 0x21 + 1).Select(i => (char)i).ToArray());
        Assert.Equal(94, all.Length);
        Assert.True(IdempotencyKey.TryParse(all, out var key, out _));
        Assert.Equal(all, key);

        // Each one alone, too (the double quote alone is a malformed quoted string, tested below).
        foreach (var c in all.Where(c => c != '"'))
        {
            Assert.True(IdempotencyKey.TryParse(c.ToString(), out var single, out _), $"0x{(int)c:X2}");
            Assert.Equal(c.ToString(), single);
        }
    }

    [Theory]
    [InlineData("\"abc\"", "abc")]
    [InlineData("\"a\\\"b\"", "a\"b")]
    [InlineData("\"a\\\\b\"", "a\\b")]
    [InlineData("\"x\"", "x")]
    public void Unquotes_structured_field_strings(string value, string expected)
    {
        Assert.True(IdempotencyKey.TryParse(value, out var key, out var error));
        Assert.Equal(expected, key);
        Assert.Null(error);
    }

    [Fact]
    public void Quoted_255_characters_are_accepted_and_256_are_not()
    {
        Assert.True(IdempotencyKey.TryParse("\"" + new string('q', 255) + "\"", out var key, out _));
        Assert.Equal(255, key.Length);
        Assert.False(IdempotencyKey.TryParse("\"" + new string('q', 256) + "\"", out _, out _));
    }

    public static TheoryData<string?> Invalid => new()
    {
        null,
        "",
        new string('k', 256),
        " ",
        "a b",
        " abc",
        "abc ",
        "a\tb",
        "\t",
        "a\u007Fb",
        "\u007F",
        "a\u0000b",
        "a\nb",
        "caf\u00E9",
        "key-\U0001F600",
        "\u00A0",
        "\"a\\b\"",       // bad escape: only \" and \\ are allowed
        "\"a\\\"",        // trailing backslash escapes the closing quote
        "\"a\"b\"",       // unescaped inner quote
        "\"\"",           // empty quoted string
        "\"",             // a lone quote: a quoted string never closed
        "\"abc",          // an opening quote never closed
        "\"a b\"",        // spaces are not allowed in a key, quoted or not
        "\"caf\u00E9\"",
        "\"a\tb\"",
    };

    [Theory]
    [MemberData(nameof(Invalid))]
    public void Rejects_invalid_values_with_a_message(string? value)
    {
        Assert.False(IdempotencyKey.TryParse(value, out var key, out var error));
        Assert.Equal(string.Empty, key);
        Assert.False(string.IsNullOrWhiteSpace(error));
    }

    [Fact]
    public void Too_long_message_names_the_limit()
    {
        Assert.False(IdempotencyKey.TryParse(new string('k', 256), out _, out var error));
        Assert.Contains("255", error, StringComparison.Ordinal);
    }
}
