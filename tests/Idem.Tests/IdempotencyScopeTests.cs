namespace Idem.Tests;

public sealed class IdempotencyScopeTests
{
    [Fact]
    public void Is_deterministic()
    {
        var a = IdempotencyScope.ComputeStoreKey("user-1", "POST /orders", "k1");
        var b = IdempotencyScope.ComputeStoreKey("user-1", "POST /orders", "k1");
        Assert.Equal(a, b);
    }

    [Fact]
    public void Each_part_changes_the_result()
    {
        var keys = new[]
        {
            IdempotencyScope.ComputeStoreKey("user-1", "POST /orders", "k1"),
            IdempotencyScope.ComputeStoreKey("user-2", "POST /orders", "k1"),
            IdempotencyScope.ComputeStoreKey("user-1", "POST /payments", "k1"),
            IdempotencyScope.ComputeStoreKey("user-1", "POST /orders", "k2"),
            IdempotencyScope.ComputeStoreKey(string.Empty, "POST /orders", "k1"),
        };
        Assert.Equal(keys.Length, keys.Distinct(StringComparer.Ordinal).Count());
    }

    [Theory]
    [InlineData("ab", "c", "k", "a", "bc", "k")]
    [InlineData("p", "ab", "c", "p", "a", "bc")]
    [InlineData("", "abc", "k", "abc", "", "k")]
    [InlineData("a", "", "bc", "a", "b", "c")]
    [InlineData("p", "o", "", "p", "", "o")]
    public void Parts_cannot_slide_into_each_other(string p1, string o1, string k1, string p2, string o2, string k2)
    {
        Assert.NotEqual(IdempotencyScope.ComputeStoreKey(p1, o1, k1), IdempotencyScope.ComputeStoreKey(p2, o2, k2));
    }

    [Theory]
    [InlineData("POST", "/orders")]
    [InlineData("PATCH", "/orders/{id}/lines")]
    [InlineData("POST", "/commandes/é")]
    [InlineData("POST", "")]
    public void An_http_operation_hashes_as_its_method_and_route_joined_by_a_space(string method, string route)
    {
        // The middleware does not build the joined string; keys already stored must still be found.
        Assert.Equal(
            IdempotencyScope.ComputeStoreKey("user-1", $"{method} {route}", "k1"),
            IdempotencyScope.ComputeHttpStoreKey("user-1", method, route, "k1"));
    }

    [Fact]
    public void Store_keys_do_not_change_between_releases()
    {
        // Stores hold these keys for their whole retention: a new release computing other keys would re-run requests.
        Assert.Equal(
            "e7e3327f5df243b47371952c043d00775811505b8f6b37c3ae1f130e2ad473aa",
            IdempotencyScope.ComputeStoreKey("user-1", "POST /orders", "k1"));
    }

    [Fact]
    public void Is_64_lowercase_hex_and_never_contains_the_key_or_principal()
    {
        const string principal = "abcdef0123456789";
        const string key = "deadbeefcafe0042";
        var storeKey = IdempotencyScope.ComputeStoreKey(principal, "POST /orders", key);

        Assert.Equal(64, storeKey.Length);
        Assert.All(storeKey, c => Assert.True(c is >= '0' and <= '9' or >= 'a' and <= 'f', $"'{c}'"));
        Assert.DoesNotContain(principal, storeKey, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(key, storeKey, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void Handles_long_and_non_ascii_parts()
    {
        var principal = new string('\u00E9', 5000);
        var a = IdempotencyScope.ComputeStoreKey(principal, "op", "k");
        var b = IdempotencyScope.ComputeStoreKey(principal + "x", "op", "k");
        Assert.Equal(64, a.Length);
        Assert.NotEqual(a, b);
    }

    [Fact]
    public void Null_parts_throw()
    {
        Assert.Throws<ArgumentNullException>(() => IdempotencyScope.ComputeStoreKey(null!, "op", "k"));
        Assert.Throws<ArgumentNullException>(() => IdempotencyScope.ComputeStoreKey("p", null!, "k"));
        Assert.Throws<ArgumentNullException>(() => IdempotencyScope.ComputeStoreKey("p", "op", null!));
    }
}
