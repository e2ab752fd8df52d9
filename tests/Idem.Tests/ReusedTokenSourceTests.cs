namespace Idem.Tests;

/// <summary>
/// The executor lets a thread keep the token source of a store call that completed synchronously (TryReset) for its
/// next call. That is safe only if a reset drops what a careless store registered on the token and never disposed:
/// a later cancellation of the reused source must not reach an earlier call's callback.
/// </summary>
public sealed class ReusedTokenSourceTests
{
    [Fact]
    public void A_reset_token_source_forgets_the_registrations_of_its_previous_use()
    {
        using var source = new CancellationTokenSource();
        var fired = false;
        _ = source.Token.Register(() => fired = true); // never disposed

        Assert.True(source.TryReset());
        source.Cancel();

        Assert.False(fired);
    }
}
