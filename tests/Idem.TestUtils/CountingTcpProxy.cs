using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Idem.TestUtils;

/// <summary>
/// A loopback TCP proxy that counts what clients send to a PostgreSQL or Redis server, by parsing the client's side of
/// the wire protocol: PostgreSQL round trips (each <c>Sync</c> or simple <c>Query</c> message ends one) and Redis
/// commands by name. It proves round-trip budgets below the store's own code, whatever the driver batches or pipelines.
/// </summary>
public sealed class CountingTcpProxy : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly IPEndPoint _upstream;
    private readonly Protocol _protocol;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ConcurrentDictionary<string, long> _counts = new(StringComparer.Ordinal);
    private readonly List<Task> _pumps = [];
    private readonly Task _accepting;

    private CountingTcpProxy(IPEndPoint upstream, Protocol protocol)
    {
        _upstream = upstream;
        _protocol = protocol;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        _accepting = AcceptAsync();
    }

    /// <summary>Which wire protocol the proxy parses.</summary>
    public enum Protocol
    {
        /// <summary>The PostgreSQL frontend protocol: counts <c>round-trips</c> (Sync and Query messages).</summary>
        PostgreSql,

        /// <summary>RESP: counts each command by its upper-case name.</summary>
        Redis,
    }

    /// <summary>The port clients connect to.</summary>
    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Starts a proxy in front of <paramref name="host"/>:<paramref name="port"/>.</summary>
    public static CountingTcpProxy Start(string host, int port, Protocol protocol) =>
        new(new IPEndPoint(Dns.GetHostAddresses(host).First(a => a.AddressFamily == AddressFamily.InterNetwork), port), protocol);

    /// <summary>How many times <paramref name="name"/> was sent so far (a Redis command name, or <c>round-trips</c>).</summary>
    public long Count(string name) => _counts.TryGetValue(name, out var count) ? count : 0;

    /// <summary>A copy of every count so far.</summary>
    public IReadOnlyDictionary<string, long> Snapshot() => new Dictionary<string, long>(_counts);

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        _listener.Stop();
        try
        {
            await _accepting;
        }
        catch (Exception)
        {
            // Stopping.
        }

        Task[] pumps;
        lock (_pumps)
        {
            pumps = [.. _pumps];
        }

        await Task.WhenAll(pumps.Select(p => p.ContinueWith(_ => { }, TaskScheduler.Default)));
        _stopping.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            var client = await _listener.AcceptTcpClientAsync(_stopping.Token);
            var pump = Task.Run(() => ServeAsync(client));
            lock (_pumps)
            {
                _pumps.Add(pump);
            }
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using (client)
        using (var server = new TcpClient())
        {
            client.NoDelay = true;
            server.NoDelay = true;
            await server.ConnectAsync(_upstream, _stopping.Token);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
            var parser = _protocol == Protocol.PostgreSql ? (Parser)new PostgreSqlParser(this) : new RedisParser(this);
            var up = PumpAsync(client.GetStream(), server.GetStream(), parser, linked.Token);
            var down = PumpAsync(server.GetStream(), client.GetStream(), null, linked.Token);
            await Task.WhenAny(up, down);
            await linked.CancelAsync();
            await Task.WhenAll(up.ContinueWith(_ => { }, TaskScheduler.Default), down.ContinueWith(_ => { }, TaskScheduler.Default));
        }
    }

    private static async Task PumpAsync(NetworkStream from, NetworkStream to, Parser? parser, CancellationToken cancellationToken)
    {
        var buffer = new byte[16 * 1024];
        while (true)
        {
            var read = await from.ReadAsync(buffer, cancellationToken);
            if (read == 0)
            {
                return;
            }

            // Counted before forwarding: once the server has the bytes, the count already includes them.
            parser?.Feed(buffer.AsSpan(0, read));
            await to.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
        }
    }

    private void Add(string name) => _counts.AddOrUpdate(name, 1, static (_, c) => c + 1);

    private abstract class Parser
    {
        private byte[] _pending = [];

        public void Feed(ReadOnlySpan<byte> data)
        {
            var all = new byte[_pending.Length + data.Length];
            _pending.CopyTo(all, 0);
            data.CopyTo(all.AsSpan(_pending.Length));
            var consumed = 0;
            while (TryConsume(all.AsSpan(consumed), out var used))
            {
                consumed += used;
            }

            _pending = all[consumed..];
        }

        /// <summary>Consumes one whole message from the front of <paramref name="data"/>, or returns false when it is incomplete.</summary>
        protected abstract bool TryConsume(ReadOnlySpan<byte> data, out int used);
    }

    private sealed class PostgreSqlParser(CountingTcpProxy proxy) : Parser
    {
        private const int SslRequest = 80877103, GssEncRequest = 80877104;
        private bool _started;

        protected override bool TryConsume(ReadOnlySpan<byte> data, out int used)
        {
            used = 0;
            if (!_started)
            {
                // Untyped messages: SSLRequest / GSSENCRequest (then another untyped one) or the StartupMessage.
                if (data.Length < 8)
                {
                    return false;
                }

                var length = BinaryPrimitives.ReadInt32BigEndian(data);
                if (data.Length < length)
                {
                    return false;
                }

                var code = BinaryPrimitives.ReadInt32BigEndian(data[4..]);
                _started = code is not SslRequest and not GssEncRequest;
                used = length;
                return true;
            }

            if (data.Length < 5)
            {
                return false;
            }

            var size = 1 + BinaryPrimitives.ReadInt32BigEndian(data[1..]);
            if (data.Length < size)
            {
                return false;
            }

            if (data[0] is (byte)'S' or (byte)'Q')
            {
                proxy.Add("round-trips");
            }

            used = size;
            return true;
        }
    }

    private sealed class RedisParser(CountingTcpProxy proxy) : Parser
    {
        protected override bool TryConsume(ReadOnlySpan<byte> data, out int used)
        {
            used = 0;
            if (!TryReadLine(data, 0, out var header, out var position) || header.Length == 0 || header[0] != '*')
            {
                return false;
            }

            var parts = int.Parse(header[1..], System.Globalization.CultureInfo.InvariantCulture);
            string? name = null;
            for (var i = 0; i < parts; i++)
            {
                if (!TryReadLine(data, position, out var bulk, out position))
                {
                    return false;
                }

                var length = int.Parse(bulk[1..], System.Globalization.CultureInfo.InvariantCulture);
                if (data.Length < position + length + 2)
                {
                    return false;
                }

                name ??= Encoding.ASCII.GetString(data.Slice(position, length)).ToUpperInvariant();
                position += length + 2;
            }

            proxy.Add(name ?? "");
            used = position;
            return true;
        }

        private static bool TryReadLine(ReadOnlySpan<byte> data, int start, out string line, out int next)
        {
            var end = data[start..].IndexOf("\r\n"u8);
            if (end < 0)
            {
                line = "";
                next = start;
                return false;
            }

            line = Encoding.ASCII.GetString(data.Slice(start, end));
            next = start + end + 2;
            return true;
        }
    }
}
