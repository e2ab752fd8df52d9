using StackExchange.Redis;

namespace Idem.Redis;

/// <summary>
/// The multiplexer behind a store or cache: the application's, or one built from the configuration string, connected on
/// first use and owned (disposed) here. Every call goes through <see cref="RunAsync{TState, T}"/>, which bounds it by the
/// operation timeout: StackExchange.Redis does not observe cancellation tokens, so the deadline is applied to the wait.
/// </summary>
internal sealed class RedisConnection : IAsyncDisposable, IDisposable
{
    private readonly IConnectionMultiplexer? _borrowed;
    private readonly ConfigurationOptions? _configuration;
    private readonly TimeSpan _timeout;
    private readonly TimeProvider _timeProvider;
    private readonly object _connectGate = new();
    private Task<IConnectionMultiplexer>? _connecting;
    private IConnectionMultiplexer? _connected; // set once connected: the hot path's multiplexer, no task to await
    private bool _disposed;

    public RedisConnection(RedisIdempotencyStoreOptions options, TimeProvider timeProvider)
    {
        _timeout = options.OperationTimeout;
        _timeProvider = timeProvider;
        if (options.ConnectionMultiplexer is { } multiplexer)
        {
            _borrowed = multiplexer;
            _connected = multiplexer;
            _connecting = Task.FromResult(multiplexer);
            return;
        }

        _configuration = ConfigurationOptions.Parse(options.Configuration!);

        // An outage must answer quickly: keep retrying connections in the background instead of failing construction,
        // and fail commands at once while disconnected instead of queueing them until they time out.
        _configuration.AbortOnConnectFail = false;
        _configuration.BacklogPolicy = BacklogPolicy.FailFast;
        var milliseconds = (int)Math.Clamp(options.OperationTimeout.TotalMilliseconds, 1, int.MaxValue);
        _configuration.AsyncTimeout = milliseconds;
        _configuration.SyncTimeout = milliseconds;
        _configuration.ConnectTimeout = Math.Min(_configuration.ConnectTimeout, milliseconds);

        // Connect in the background right away, so the first request does not pay for the handshake; a failure here
        // is retried by the first call.
        _connecting = ConnectAsync();
    }

    /// <summary>The operation timeout every call is bounded by.</summary>
    public TimeSpan Timeout => _timeout;

    /// <summary>Returns the multiplexer, connecting it on first use (bounded by the operation timeout).</summary>
    public Task<IConnectionMultiplexer> GetMultiplexerAsync(CancellationToken cancellationToken)
    {
        var connecting = Volatile.Read(ref _connecting);
        if (connecting is { IsCompletedSuccessfully: true })
        {
            return connecting;
        }

        lock (_connectGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);

            // A failed attempt is replaced, so the next call tries again; only one attempt runs at a time.
            if (_connecting is null || _connecting.IsFaulted || _connecting.IsCanceled)
            {
                _connecting = ConnectAsync();
            }

            connecting = _connecting;
        }

        return connecting.WaitAsync(_timeout, _timeProvider, cancellationToken);
    }

    /// <summary>Runs <paramref name="call"/> on the database, bounded by the operation timeout.</summary>
    /// <remarks>
    /// Connected (the usual case), this adds no state machine of its own to the call: it returns the call's task bounded
    /// by <see cref="Task{TResult}.WaitAsync(TimeSpan, TimeProvider, CancellationToken)"/> (one async layer and its
    /// allocation less per Redis call on every request). Its timeout then carries <c>WaitAsync</c>'s message; it is
    /// still a <see cref="TimeoutException"/>, which the stores treat as the store failure it is.
    /// </remarks>
    /// <exception cref="TimeoutException">The call (connecting included) took longer than the operation timeout.</exception>
    public Task<T> RunAsync<TState, T>(Func<IDatabase, TState, Task<T>> call, TState state, CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _connected) is not { } multiplexer || cancellationToken.IsCancellationRequested)
        {
            return RunConnectingAsync(call, state, cancellationToken);
        }

        var pending = call(multiplexer.GetDatabase(), state);
        return pending.IsCompleted ? pending : pending.WaitAsync(_timeout, _timeProvider, cancellationToken);
    }

    private async Task<T> RunConnectingAsync<TState, T>(Func<IDatabase, TState, Task<T>> call, TState state, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var started = _timeProvider.GetTimestamp();
        var multiplexer = await GetMultiplexerAsync(cancellationToken).ConfigureAwait(false);
        var left = _timeout - _timeProvider.GetElapsedTime(started);
        if (left <= TimeSpan.Zero)
        {
            throw new TimeoutException($"The Redis call did not finish within {_timeout.TotalMilliseconds} ms.");
        }

        try
        {
            return await call(multiplexer.GetDatabase(), state).WaitAsync(left, _timeProvider, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException ex) when (ex is not RedisTimeoutException)
        {
            throw new TimeoutException($"The Redis call did not finish within {_timeout.TotalMilliseconds} ms.", ex);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (TakeForClose() is { } connecting)
        {
            await CloseAsync(connecting, synchronously: false).ConfigureAwait(false);
        }
    }

    // Marks the connection disposed once; returns what an owned connection has to close (null when borrowed or done).
    private Task<IConnectionMultiplexer>? TakeForClose()
    {
        if (_borrowed is not null)
        {
            return null;
        }

        lock (_connectGate)
        {
            if (_disposed)
            {
                return null;
            }

            _disposed = true;
            return _connecting;
        }
    }

    /// <summary>Closes an owned multiplexer that is connected; one still connecting is closed when it finishes.</summary>
    public void Dispose()
    {
        if (TakeForClose() is { } connecting)
        {
            // Runs synchronously when the multiplexer is connected already (the usual case).
            _ = CloseAsync(connecting, synchronously: true);
        }
    }

    private static async Task CloseAsync(Task<IConnectionMultiplexer> connecting, bool synchronously)
    {
        try
        {
            var multiplexer = await connecting.ConfigureAwait(false);
            if (synchronously)
            {
                multiplexer.Dispose();
            }
            else
            {
                await multiplexer.DisposeAsync().ConfigureAwait(false);
            }
        }
#pragma warning disable CA1031 // A connection that never came up has nothing to close.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private async Task<IConnectionMultiplexer> ConnectAsync()
    {
        var multiplexer = await ConnectionMultiplexer.ConnectAsync(_configuration!).ConfigureAwait(false);
        Volatile.Write(ref _connected, multiplexer);
        return multiplexer;
    }
}
