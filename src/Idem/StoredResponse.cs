namespace Idem;

/// <summary>
/// The outcome of one execution as it is kept for replay: a status code, headers and the exact body bytes.
/// Outside HTTP the status code is whatever the caller gives it meaning (200 for success is a good choice).
/// </summary>
public sealed class StoredResponse
{
    /// <summary>Creates a stored response.</summary>
    public StoredResponse(int statusCode, IReadOnlyList<KeyValuePair<string, string>>? headers, ReadOnlyMemory<byte> body)
    {
        StatusCode = statusCode;
        Headers = headers ?? [];
        Body = body;
    }

    /// <summary>The status code.</summary>
    public int StatusCode { get; }

    /// <summary>The headers kept for replay, in the order they were sent; a name may repeat.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Headers { get; }

    /// <summary>The body bytes, exactly as the first caller received them.</summary>
    public ReadOnlyMemory<byte> Body { get; }

    /// <summary>
    /// <see langword="true"/> when the body was larger than the configured limit and was not kept.
    /// The operation still counts as done: replays must say so instead of running it again.
    /// </summary>
    public bool BodyOmitted { get; init; }

    /// <summary>Returns a copy without the body, marked as omitted.</summary>
    public StoredResponse WithoutBody() => new(StatusCode, Headers, ReadOnlyMemory<byte>.Empty) { BodyOmitted = true };
}
