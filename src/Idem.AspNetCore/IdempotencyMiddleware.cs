using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Idem.AspNetCore;

/// <summary>
/// Puts endpoints marked with <c>RequireIdempotency()</c> or <see cref="IdempotentAttribute"/> under the executor:
/// validates the key, fingerprints the request, then executes once, replays, waits or refuses.
/// </summary>
internal sealed class IdempotencyMiddleware
{
    private const string ReplayedHeader = "Idempotent-Replayed";

    private readonly RequestDelegate _next;
    private readonly IdempotencyExecutor _executor;
    private readonly IdempotencyMetrics _metrics;
    private readonly IdempotencyOptions _options;
    private readonly ResponseHeaderAllowList _allowList;
    private readonly ILogger _logger;
    private readonly ConditionalWeakTable<IIdempotencyEndpointMetadata, EndpointPolicy> _policies = new();
    private readonly ConditionalWeakTable<IIdempotencyEndpointMetadata, EndpointPolicy>.CreateValueCallback _resolvePolicy;

    public IdempotencyMiddleware(
        RequestDelegate next,
        IdempotencyExecutor executor,
        IdempotencyMetrics metrics,
        IOptions<IdempotencyOptions> options,
        ILogger<IdempotencyMiddleware> logger)
    {
        _next = next;
        _executor = executor;
        _metrics = metrics;
        _options = options.Value;
        _allowList = new ResponseHeaderAllowList(_options.ReplayedHeaders);
        _logger = logger;
        _resolvePolicy = m => EndpointPolicy.Resolve(m.Options, _options);
    }

    public Task InvokeAsync(HttpContext context)
    {
        var metadata = context.GetEndpoint()?.Metadata.GetMetadata<IIdempotencyEndpointMetadata>();
        if (metadata is null)
        {
            return _next(context);
        }

        var feature = new IdempotencyFeature();
        context.Features.Set<IIdempotencyFeature>(feature);
        var policy = _policies.GetValue(metadata, _resolvePolicy);
        if (!policy.Methods.Contains(context.Request.Method))
        {
            return _next(context);
        }

        return InvokeProtectedAsync(context, policy, feature);
    }

    private async Task InvokeProtectedAsync(HttpContext context, EndpointPolicy policy, IdempotencyFeature feature)
    {
        // Middleware in front that settled the id first also opened the request's log scope; otherwise it is opened here.
        var outer = context.Features.Get<RequestCorrelation>();
        var correlation = outer ?? RequestCorrelation.Accept(context, _options.CorrelationIdHeader);
        var requestId = correlation.RequestId;
        using var scope = outer is null ? correlation.BeginLogScope(_logger) : null;
        context.Response.Headers[_options.CorrelationIdHeader] = requestId;

        var headerValues = context.Request.Headers[_options.HeaderName];
        string? key = null;
        if (headerValues.Count == 0)
        {
            if (policy.ImplicitPolicy is null)
            {
                if (policy.RequireKey)
                {
                    await RejectAsync(context, requestId, StatusCodes.Status400BadRequest, "Idempotency key required",
                        $"This endpoint requires an {_options.HeaderName} header: a unique value (for example a UUID) per operation, reused on retries.").ConfigureAwait(false);
                    return;
                }

                _metrics.Request(IdempotencyRequestOutcome.NoKey);
                Log.NoKey(_logger, requestId, context.GetEndpoint()?.DisplayName);
                await _next(context).ConfigureAwait(false);
                return;
            }
        }
        else if (headerValues.Count > 1)
        {
            await RejectAsync(context, requestId, StatusCodes.Status400BadRequest, "Invalid idempotency key",
                $"The {_options.HeaderName} header was sent {headerValues.Count} times; send exactly one.").ConfigureAwait(false);
            return;
        }
        else if (!IdempotencyKey.TryParse(headerValues[0], out key, out var keyError))
        {
            await RejectAsync(context, requestId, StatusCodes.Status400BadRequest, "Invalid idempotency key",
                keyError!.Replace("Idempotency-Key", _options.HeaderName, StringComparison.Ordinal)).ConfigureAwait(false);
            return;
        }

        string fingerprint;
        try
        {
            var fingerprintOrNull = await FingerprintAsync(context).ConfigureAwait(false);
            if (fingerprintOrNull is null)
            {
                await RejectAsync(context, requestId, StatusCodes.Status413PayloadTooLarge, "Request body too large",
                    $"A protected request is limited to {_options.MaxRequestBodyBytes} bytes, since its body is hashed before it runs.").ConfigureAwait(false);
                return;
            }

            fingerprint = fingerprintOrNull;
        }
        catch (BadHttpRequestException ex)
        {
            await RejectAsync(context, requestId, ex.StatusCode, "Unreadable request body", ex.Message).ConfigureAwait(false);
            return;
        }
        catch (EndOfStreamException)
        {
            await RejectAsync(context, requestId, StatusCodes.Status400BadRequest, "Truncated request body",
                "The request body ended before its Content-Length.").ConfigureAwait(false);
            return;
        }
        catch (Exception ex) when ((ex is OperationCanceledException or IOException) && context.RequestAborted.IsCancellationRequested)
        {
            return; // The client went away while sending the body; nothing was claimed and nobody is listening.
        }

        var executionPolicy = policy.Policy;
        if (key is null)
        {
            // No key, but the endpoint opted in to implicit keys: the request itself is the key for a short window,
            // so a double-click or a second tab from a client that never sends keys still executes once.
            key = "implicit:" + fingerprint;
            executionPolicy = policy.ImplicitPolicy!;
        }

        var route = (context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? context.Request.Path.Value ?? string.Empty;
        var principal = _options.PrincipalResolver(context) ?? string.Empty;
        var storeKey = IdempotencyScope.ComputeHttpStoreKey(principal, context.Request.Method, route, key);

        // For operators (idem keys list --principal-hash --route): the principal only as its hash, never a metric tag.
        var metadata = IdempotencyRecordMetadata.Create(principal, context.Request.Method + " " + route);

        IdempotencyOutcome outcome;
        try
        {
            outcome = await _executor.ExecuteAsync(
                storeKey,
                fingerprint,
                metadata,
                executionPolicy,
                (Middleware: this, Context: context, Feature: feature, Policy: executionPolicy, RequestId: requestId),
                static (execution, s) => s.Middleware.RunHandlerAsync(s.Context, execution, s.Feature, s.Policy, s.RequestId),
                context.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested && !feature.IsProtected)
        {
            return; // The client gave up while waiting for another owner.
        }
        finally
        {
            // The store has copied the response by now (the executor awaits the completion), so the captured bytes,
            // which the stored response pointed at, go back to the pool.
            feature.ReleaseCapture();
        }

        Log.Outcome(_logger, requestId, outcome.Kind, storeKey);
        if (feature.Held is { } held)
        {
            // A joined transaction: the handler's response was held, never sent. It leaves only now that the outcome is
            // known; any other outcome (the commit failed, or this owner lost the key and the winner is replayed) replaces it.
            feature.Held = null;
            if (outcome.Kind == IdempotencyOutcomeKind.Executed)
            {
                if (held.Length > 0 && !HttpMethods.IsHead(context.Request.Method))
                {
                    await context.Response.Body.WriteAsync(held.GetBuffer().AsMemory(0, (int)held.Length), CancellationToken.None).ConfigureAwait(false);
                }

                return;
            }

            if (!context.Response.HasStarted)
            {
                context.Response.Clear();
                context.Response.Headers[_options.CorrelationIdHeader] = requestId;
            }
        }

        switch (outcome.Kind)
        {
            case IdempotencyOutcomeKind.Executed:
                return;
            case IdempotencyOutcomeKind.ExecutedUnprotected:
                Log.ServedUnprotected(_logger, requestId);
                return;
            case IdempotencyOutcomeKind.Replayed:
                await ReplayAsync(context, outcome.Response!).ConfigureAwait(false);
                return;
            case IdempotencyOutcomeKind.Conflict:
                await IdempotencyProblems.WriteAsync(context, StatusCodes.Status409Conflict, "Request in progress",
                    $"A request with this {_options.HeaderName} is still being processed. Retry after the indicated delay to get its response.",
                    outcome.RetryAfter).ConfigureAwait(false);
                return;
            case IdempotencyOutcomeKind.FingerprintMismatch:
                await IdempotencyProblems.WriteAsync(context, StatusCodes.Status422UnprocessableEntity, "Idempotency key reused",
                    $"This {_options.HeaderName} was already used with a different request (method, path, query, content type or body). Use a new key for a new operation.").ConfigureAwait(false);
                return;
            case IdempotencyOutcomeKind.StoreUnavailable:
                await IdempotencyProblems.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Idempotency store unavailable",
                    "The request was not processed because its idempotency could not be guaranteed. Retry with the same key.",
                    outcome.RetryAfter).ConfigureAwait(false);
                return;
            default:
                throw new UnreachableException($"Unknown outcome {outcome.Kind}.");
        }
    }

    private async ValueTask<StoredResponse> RunHandlerAsync(HttpContext context, IdempotentExecution execution, IdempotencyFeature feature, IdempotencyPolicy policy, string requestId)
    {
        feature.IsProtected = true;
        feature.OwnerToken = execution.OwnerToken;
        feature.Execution = execution;

        var originalBody = context.Features.GetRequiredFeature<IHttpResponseBodyFeature>();
        var originalLifetime = context.Features.GetRequiredFeature<IHttpRequestLifetimeFeature>();

        // In a joined transaction nothing reaches the client before the commit: a success that is then rolled back
        // must never have been seen. The whole response is held (headers too: nothing starts the real response).
        var target = originalBody;
        if (policy.JoinedTransaction)
        {
            var held = new MemoryStream();
            feature.Held = held;
            target = new HeldResponseBodyFeature(held);
        }

        var capture = new ResponseCaptureStream(target.Stream, policy.MaxStoredBodyBytes);
        feature.Capture = capture;
        var captureBody = new ResponseCaptureFeature(target, capture);
        context.Features.Set<IHttpResponseBodyFeature>(captureBody);
        context.Features.Set<IHttpRequestLifetimeFeature>(new DetachedRequestLifetimeFeature(originalLifetime, execution.CancellationToken));
        try
        {
            await _next(context).ConfigureAwait(false);
            await captureBody.CompleteAsync().ConfigureAwait(false);
        }
        finally
        {
            context.Features.Set(originalBody);
            context.Features.Set(originalLifetime);
        }

        if (captureBody.ClientGone)
        {
            Log.ClientGone(_logger, requestId);
        }

        var response = context.Response;
        var headers = _allowList.Capture(response.Headers);
        return capture.Overflowed
            ? new StoredResponse(response.StatusCode, headers, ReadOnlyMemory<byte>.Empty) { BodyOmitted = true }
            : new StoredResponse(response.StatusCode, headers, capture.Captured); // no copy: the body is held once, until the store has its own
    }

    private async Task ReplayAsync(HttpContext context, StoredResponse stored)
    {
        if (stored.BodyOmitted)
        {
            await IdempotencyProblems.WriteAsync(context, StatusCodes.Status409Conflict, "Response not retained",
                $"The request with this {_options.HeaderName} was processed with status {stored.StatusCode}, but its response was too large to retain. It will not be processed again.").ConfigureAwait(false);
            return;
        }

        var response = context.Response;
        response.StatusCode = stored.StatusCode;
        var headers = stored.Headers;
        for (var i = 0; i < headers.Count; i++)
        {
            response.Headers.Append(headers[i].Key, headers[i].Value);
        }

        response.Headers[ReplayedHeader] = "true";
        response.ContentLength = stored.Body.Length;
        if (!stored.Body.IsEmpty && !HttpMethods.IsHead(context.Request.Method))
        {
            await response.Body.WriteAsync(stored.Body, CancellationToken.None).ConfigureAwait(false);
        }
    }

    private async ValueTask<string?> FingerprintAsync(HttpContext context)
    {
        var request = context.Request;
        var max = _options.MaxRequestBodyBytes;
        if (request.ContentLength > max)
        {
            return null;
        }

        using var fingerprint = new RequestFingerprint();
        AppendRequestParts(fingerprint, request);

        if (request.ContentLength == 0 || (request.ContentLength is null && !request.Headers.ContainsKey("Transfer-Encoding")))
        {
            return fingerprint.Complete();
        }

        Stream body;
        if (request.ContentLength is { } length && length <= _options.RequestBufferThreshold)
        {
            // The common case, a small body of known length: one exact-size array serves the hash and the handler.
            var bytes = new byte[length];
            await request.Body.ReadExactlyAsync(bytes, context.RequestAborted).ConfigureAwait(false);
            fingerprint.AppendBody(bytes);
            body = new MemoryStream(bytes, writable: false);
            request.Body = body;
            context.Features.Set<IRequestBodyPipeFeature>(new BufferedRequestBodyPipeFeature(request, body, bytes, context.Features.Get<IRequestBodyPipeFeature>()));
            return await CompleteFingerprintAsync(context, fingerprint, body).ConfigureAwait(false);
        }

        // Memory first, then a temp file: the handler reads the same bytes again after the claim.
        request.EnableBuffering(_options.RequestBufferThreshold);
        body = request.Body;
        var buffer = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            int read;
            while ((read = await body.ReadAsync(buffer, context.RequestAborted).ConfigureAwait(false)) > 0)
            {
                if (fingerprint.BodyLength + read > max)
                {
                    return null;
                }

                fingerprint.AppendBody(buffer.AsSpan(0, read));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        body.Position = 0;
        return await CompleteFingerprintAsync(context, fingerprint, body).ConfigureAwait(false);
    }

    private async ValueTask<string> CompleteFingerprintAsync(HttpContext context, RequestFingerprint fingerprint, Stream body)
    {
        var request = context.Request;
        if (_options.CanonicalJsonFingerprint && IsJson(request.ContentType) && fingerprint.BodyLength > 0)
        {
            var canonical = await CanonicalJson.TryHashAsync(body, context.RequestAborted).ConfigureAwait(false);
            body.Position = 0;
            if (canonical is not null)
            {
                fingerprint.Complete(); // discard the raw-bytes hash
                using var semantic = new RequestFingerprint();
                AppendRequestParts(semantic, request);
                semantic.AppendPart("canonical-json", canonical);
                return semantic.Complete();
            }
        }

        return fingerprint.Complete();
    }

    private void AppendRequestParts(RequestFingerprint fingerprint, HttpRequest request)
    {
        fingerprint.AppendPart("method", request.Method);
        fingerprint.AppendPart("path", string.Concat(request.PathBase.Value, request.Path.Value));
        fingerprint.AppendPart("query", request.QueryString.Value);
        fingerprint.AppendPart("content-type", request.ContentType);
        foreach (var header in _options.FingerprintHeaders)
        {
            fingerprint.AppendPart(header, request.Headers.TryGetValue(header, out var value) ? value.ToString() : null);
        }
    }

    private static bool IsJson(string? contentType) =>
        contentType is not null
        && (contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase)
            || contentType.Split(';')[0].EndsWith("+json", StringComparison.OrdinalIgnoreCase));

    private Task RejectAsync(HttpContext context, string requestId, int status, string title, string detail)
    {
        _metrics.Request(IdempotencyRequestOutcome.Rejected);
        Log.RequestRejected(_logger, requestId, detail);
        return IdempotencyProblems.WriteAsync(context, status, title, detail);
    }

    private sealed class EndpointPolicy
    {
        public required IdempotencyPolicy Policy { get; init; }

        public required HashSet<string> Methods { get; init; }

        public required bool RequireKey { get; init; }

        public IdempotencyPolicy? ImplicitPolicy { get; init; }

        public static EndpointPolicy Resolve(IdempotencyEndpointOptions endpoint, IdempotencyOptions app)
        {
            var policy = endpoint.ToPolicy(app.DefaultPolicy);
            return new EndpointPolicy
            {
                Policy = policy,
                // Disabled: no method is protected, so every request passes through.
                Methods = endpoint.Enabled == false ? [] : new HashSet<string>(endpoint.Methods ?? (IEnumerable<string>)app.Methods, StringComparer.OrdinalIgnoreCase),
                RequireKey = endpoint.RequireKey ?? app.RequireKey,
                ImplicitPolicy = endpoint.ImplicitKeyWindow is { } window ? policy with { Retention = window } : null,
            };
        }
    }

    /// <summary>The response body of a joined transaction's handler: kept in memory, and nothing starts the real response.</summary>
    private sealed class HeldResponseBodyFeature(MemoryStream held) : IHttpResponseBodyFeature
    {
        private PipeWriter? _writer;

        public Stream Stream => held;

        public PipeWriter Writer => _writer ??= PipeWriter.Create(held, new StreamPipeWriterOptions(leaveOpen: true));

        public void DisableBuffering()
        {
        }

        public Task StartAsync(CancellationToken cancellationToken = default) => Task.CompletedTask;

        public Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default) =>
            SendFileFallback.SendFileAsync(held, path, offset, count, cancellationToken);

        public async Task CompleteAsync()
        {
            if (_writer is not null)
            {
                await _writer.FlushAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// The request body as a pipe over the bytes already read for the fingerprint: without it the server would wrap the
    /// replacement stream in a stream pipe reader (three objects and a copy) for handlers that read the pipe.
    /// </summary>
    private sealed class BufferedRequestBodyPipeFeature(HttpRequest request, Stream body, byte[] bytes, IRequestBodyPipeFeature? original) : IRequestBodyPipeFeature
    {
        private PipeReader? _reader;

        // A body replaced again later (by other middleware) is read through the server's own feature, as usual.
        public PipeReader Reader => ReferenceEquals(request.Body, body) || original is null
            ? _reader ??= PipeReader.Create(new ReadOnlySequence<byte>(bytes))
            : original.Reader;
    }
}
