using Idem.Http;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Idem's key handler to an HttpClient built by the HttpClientFactory.</summary>
public static class IdempotencyHttpClientBuilderExtensions
{
    /// <summary>
    /// Gives each logical request of this client one <c>Idempotency-Key</c> (generated, or set per request with
    /// <see cref="IdempotencyHttpMessageExtensions.SetIdempotencyKey"/>). The handler is put first in the client's
    /// pipeline whatever the order of the calls, outside <c>AddStandardResilienceHandler()</c> and any other retry or
    /// hedging handler, so every attempt of one logical request carries the same key and the server runs it once.
    /// </summary>
    /// <param name="builder">The client's builder.</param>
    /// <param name="configure">Configures the header, the methods that get a key and the key factory.</param>
    public static IHttpClientBuilder AddIdempotencyKeys(this IHttpClientBuilder builder, Action<IdempotencyKeyOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.Services.AddOptions<IdempotencyKeyOptions>(builder.Name);
        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.Validate(
            static o => !string.IsNullOrWhiteSpace(o.HeaderName) && o.KeyFactory is not null,
            $"{nameof(IdempotencyKeyOptions)}: {nameof(IdempotencyKeyOptions.HeaderName)} must not be empty and {nameof(IdempotencyKeyOptions.KeyFactory)} must not be null.");

        var name = builder.Name;
        // Inserted at index 0 when the pipeline is built, after every AddHttpMessageHandler/AddResilienceHandler
        // registration has added its own handler: outermost, so it runs before the retry loop, not inside it.
        builder.ConfigureAdditionalHttpMessageHandlers((handlers, services) =>
            handlers.Insert(0, new IdempotencyKeyHandler(services.GetRequiredService<IOptionsMonitor<IdempotencyKeyOptions>>().Get(name))));
        return builder;
    }
}
