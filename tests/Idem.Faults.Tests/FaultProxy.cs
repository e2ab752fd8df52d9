using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Idem.Faults.Tests;

/// <summary>
/// A loopback TCP proxy between the gateway nodes and a store, which the nemesis uses to drop connections (close every
/// open one and refuse new ones) or stall them (stop moving bytes, connections stay open). The target can be changed,
/// so a store killed and started again on another port is reached through the same address.
/// </summary>
internal sealed class FaultProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<int, (TcpClient Client, TcpClient Server)> _connections = new();
    private readonly Task _accepting;
    private volatile TaskCompletionSource _flowing = Completed();
    private volatile bool _dropping;
    private int _nextId;

    public FaultProxy(IPEndPoint target)
    {
        Target = target;
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    public IPEndPoint Target { get; set; }

    /// <summary>Closes every open connection and refuses new ones until <see cref="Heal"/>.</summary>
    public void Drop()
    {
        _dropping = true;
        foreach (var (id, pair) in _connections)
        {
            Close(id, pair);
        }
    }

    /// <summary>Stops moving bytes on every connection (open or new) until <see cref="Heal"/>.</summary>
    public void Stall()
    {
        if (_flowing.Task.IsCompleted)
        {
            _flowing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
    }

    public void Heal()
    {
        _dropping = false;
        _flowing.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        Heal();
        foreach (var (id, pair) in _connections)
        {
            Close(id, pair);
        }

        try
        {
            await _accepting;
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }

        _stop.Dispose();
    }

    private static TaskCompletionSource Completed()
    {
        var done = new TaskCompletionSource();
        done.SetResult();
        return done;
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            var client = await _listener.AcceptTcpClientAsync(_stop.Token);
            if (_dropping)
            {
                client.Client.LingerState = new LingerOption(true, 0);
                client.Dispose();
                continue;
            }

            _ = HandleAsync(client);
        }
    }

    private async Task HandleAsync(TcpClient client)
    {
        var id = Interlocked.Increment(ref _nextId);
        var server = new TcpClient();
        try
        {
            await server.ConnectAsync(Target, _stop.Token);
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException)
        {
            client.Dispose();
            server.Dispose();
            return;
        }

        _connections[id] = (client, server);
        var up = PumpAsync(client.GetStream(), server.GetStream());
        var down = PumpAsync(server.GetStream(), client.GetStream());
        await Task.WhenAny(up, down);
        Close(id, (client, server));
        await Task.WhenAll(up, down);
    }

    private async Task PumpAsync(NetworkStream from, NetworkStream to)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            while (true)
            {
                var read = await from.ReadAsync(buffer, _stop.Token);
                if (read == 0)
                {
                    return;
                }

                await _flowing.Task.WaitAsync(_stop.Token);
                await to.WriteAsync(buffer.AsMemory(0, read), _stop.Token);
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
        }
    }

    private void Close(int id, (TcpClient Client, TcpClient Server) pair)
    {
        // Drop, DisposeAsync and the connection's own end can close it at the same moment: only the one that removes
        // it closes it (a disposed TcpClient's Client is null, and a second close threw on it).
        if (!_connections.TryRemove(id, out _))
        {
            return;
        }

        foreach (var side in new[] { pair.Client, pair.Server })
        {
            try
            {
                side.Client.LingerState = new LingerOption(true, 0); // a reset, like a dropped connection
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }

            side.Dispose();
        }
    }
}
