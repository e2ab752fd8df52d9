using Idem.AspNetCore;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Yarp.ReverseProxy.Forwarder;

namespace Idem.Gateway;

/// <summary>
/// Fires when the gateway is stopping and in-flight requests are about to run out of the host's shutdown timeout:
/// 80 % of it. Forwarded calls still running then are cancelled, so their claims are released (a retry elsewhere
/// runs again) instead of being held until the lease expires.
/// </summary>
internal sealed partial class GatewayDrain(IHostApplicationLifetime lifetime, IOptions<HostOptions> hostOptions, ILogger<GatewayDrain> logger)
    : IHostedService, IDisposable
{
    private readonly CancellationTokenSource _drain = new();
    private CancellationTokenRegistration _stopping;

    public CancellationToken Token => _drain.Token;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _stopping = lifetime.ApplicationStopping.Register(() =>
        {
            var grace = Grace;
            LogDraining(logger, grace);
            _drain.CancelAfter(grace);
        });
        return Task.CompletedTask;
    }

    public TimeSpan Grace => hostOptions.Value.ShutdownTimeout * 0.8;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void Dispose()
    {
        _stopping.Dispose();
        _drain.Dispose();
    }

    [LoggerMessage(5001, LogLevel.Information, "Stopping: in-flight requests have {Grace} to finish; forwarded calls still running then are cancelled and their idempotency keys released.", EventName = "Draining")]
    private static partial void LogDraining(ILogger logger, TimeSpan grace);
}

/// <summary>
/// Runs inside YARP's proxy pipeline, under Idem's claim. Links the request's (already detached) abort token with the
/// drain token, and refuses to let a broken forward be stored: when YARP reports an error after the upstream's status
/// was copied (the body was cut short), the claim is released instead of completed with a truncated response.
/// </summary>
internal sealed class GatewayForwardingMiddleware(RequestDelegate next, GatewayDrain drain)
{
    private static readonly TimeSpan RetryAfter = TimeSpan.FromSeconds(1);

    public async Task InvokeAsync(HttpContext context)
    {
        var original = context.Features.GetRequiredFeature<IHttpRequestLifetimeFeature>();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(original.RequestAborted, drain.Token);
        context.Features.Set<IHttpRequestLifetimeFeature>(new LinkedRequestLifetimeFeature(original, linked.Token));
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            context.Features.Set(original);
        }

        if (context.Features.Get<IForwarderErrorFeature>() is not { Error: not ForwarderError.None } error)
        {
            return;
        }

        var idempotency = context.Features.Get<IIdempotencyFeature>();
        var isProtected = idempotency is { IsProtected: true };
        if (!context.Response.HasStarted
            && idempotency?.Execution is { CancellationToken.IsCancellationRequested: true }
            && !drain.Token.IsCancellationRequested)
        {
            // Idem stopped the forward (a client that goes away does not: the forward runs detached), not a drain: the
            // claim's lease could not be renewed (the store was out of reach) or the execution timed out. The store's
            // failure, not the upstream's: 503 with Retry-After like every other one, not stored, so the key is released.
            await IdempotencyProblems.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Idempotency claim lost",
                "The gateway stopped forwarding because its claim on this idempotency key could not be kept (the idempotency store was unreachable, or the execution timed out). Retry with the same key.",
                RetryAfter).ConfigureAwait(false);
            return;
        }

        if (context.Response.HasStarted)
        {
            if (context.Response.StatusCode < 500 && isProtected)
            {
                // Part of the response is on its way to the client: the connection is reset (YARP did), and the claim
                // must be released, not completed with a truncated response.
                throw new GatewayForwardingException($"Forwarding failed after the upstream's status {context.Response.StatusCode} was copied ({error.Error}); the response is incomplete and will not be stored.", error.Exception);
            }

            return;
        }

        // Nothing reached the client yet, so it gets an answer, never an exception's bare 500. YARP answers its own errors
        // with an empty body and, for some (a request body it could not copy), a 4xx that Idem would store as the
        // key's outcome: a protected request's failed forward is a 502 (not stored, the key is released).
        var status = context.Response.StatusCode >= 500 || !isProtected ? context.Response.StatusCode : StatusCodes.Status502BadGateway;
        var detail = $"The gateway got no complete response from the upstream ({error.Error})." + (isProtected
            ? " Nothing was stored for this idempotency key: a retry with the same key runs the request again."
            : string.Empty);
        await IdempotencyProblems.WriteAsync(context, status, "Upstream request failed", detail).ConfigureAwait(false);
    }

    private sealed class LinkedRequestLifetimeFeature(IHttpRequestLifetimeFeature original, CancellationToken token) : IHttpRequestLifetimeFeature
    {
        public CancellationToken RequestAborted
        {
            get => token;
            set { }
        }

        public void Abort() => original.Abort();
    }
}

/// <summary>A forwarded response that cannot be stored because YARP could not finish it.</summary>
internal sealed class GatewayForwardingException(string message, Exception? inner) : Exception(message, inner);
