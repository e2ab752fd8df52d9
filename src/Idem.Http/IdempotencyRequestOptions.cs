namespace Idem.Http;

/// <summary>Per-request settings read by the handler that <c>AddIdempotencyKeys()</c> adds.</summary>
public static class IdempotencyRequestOptions
{
    /// <summary>
    /// The request's key. Set it to use a key of your own (for example derived from a business id, so a worker that
    /// runs again sends the same one); the handler sets it to the key it generated otherwise.
    /// </summary>
    public static readonly HttpRequestOptionsKey<string> Key = new("Idem.IdempotencyKey");

    /// <summary>Set to <see langword="true"/> to send this request without a key.</summary>
    public static readonly HttpRequestOptionsKey<bool> Disabled = new("Idem.IdempotencyKey.Disabled");
}
