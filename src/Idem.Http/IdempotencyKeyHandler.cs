namespace Idem.Http;

/// <summary>
/// Gives each logical request one key. It sits outside the resilience handler (first in the client's pipeline), so
/// it runs once per logical request and every retry and hedge below it carries the key it set.
/// </summary>
internal sealed class IdempotencyKeyHandler : DelegatingHandler
{
    private readonly IdempotencyKeyOptions _options;

    public IdempotencyKeyHandler(IdempotencyKeyOptions options)
    {
        _options = options;
    }

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        Apply(request);
        return base.SendAsync(request, cancellationToken);
    }

    protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        Apply(request);
        return base.Send(request, cancellationToken);
    }

    private void Apply(HttpRequestMessage request)
    {
        if (!_options.Methods.Contains(request.Method)
            || (request.Options.TryGetValue(IdempotencyRequestOptions.Disabled, out var disabled) && disabled))
        {
            return;
        }

        // A key already in the header (set by hand) wins; it is recorded so the response can tell it.
        if (request.Headers.TryGetValues(_options.HeaderName, out var existing))
        {
            request.Options.Set(IdempotencyRequestOptions.Key, existing.First());
            return;
        }

        if (!request.Options.TryGetValue(IdempotencyRequestOptions.Key, out var key))
        {
            key = _options.KeyFactory(request);
            IdempotencyHttpMessageExtensions.ValidateKey(key);
            request.Options.Set(IdempotencyRequestOptions.Key, key);
        }

        request.Headers.TryAddWithoutValidation(_options.HeaderName, key);
    }
}
