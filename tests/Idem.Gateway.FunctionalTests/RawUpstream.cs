using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Idem.Gateway.FunctionalTests;

/// <summary>What <see cref="RawUpstream"/> does with one request.</summary>
internal enum RawReply
{
    /// <summary>A complete 201 with a JSON body naming the execution.</summary>
    Complete,

    /// <summary><c>201</c> with <c>Content-Length: 1000</c>, part of the body, then a clean close: a response cut short.</summary>
    Truncated,

    /// <summary>A TCP reset after reading the request, before any byte of a response.</summary>
    Reset,
}

/// <summary>
/// An HTTP/1.1 upstream on a raw loopback socket, for the failures a well-behaved server like Kestrel will not produce
/// on purpose. Every connection carries one request and is then closed (<c>Connection: close</c>), so the gateway
/// never reuses a connection: each request it forwards is a new connection and is counted exactly once here.
/// </summary>
internal sealed class RawUpstream : IAsyncDisposable
{
    public const int DeclaredLength = 1000;
    public const int SentLength = 300;

    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly Func<int, RawReply> _reply;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private int _requests;

    /// <param name="reply">What to do with the n-th request (1-based).</param>
    public RawUpstream(Func<int, RawReply> reply)
    {
        _reply = reply;
        _listener.Start();
        Address = new Uri($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");
        _accepting = AcceptAsync();
    }

    public Uri Address { get; }

    /// <summary>Requests received in full (head and body): each one an execution of the upstream's work.</summary>
    public int Requests => Volatile.Read(ref _requests);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try
        {
            await _accepting;
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The listener was stopped under a pending accept.
        }

        _stop.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            var client = await _listener.AcceptTcpClientAsync(_stop.Token);
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using (client)
        {
            try
            {
                await ReplyAsync(client);
            }
            catch (IOException)
            {
                // The gateway went away first; nothing to answer.
            }
        }
    }

    private async Task ReplyAsync(TcpClient client)
    {
        var stream = client.GetStream();
        if (!await ReadRequestAsync(stream))
        {
            return;
        }

        var n = Interlocked.Increment(ref _requests);
        switch (_reply(n))
        {
            case RawReply.Complete:
                var body = Encoding.UTF8.GetBytes($"{{\"execution\":{n},\"id\":\"{Guid.NewGuid()}\"}}");
                await stream.WriteAsync(Encoding.ASCII.GetBytes(
                    $"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nLocation: /orders/{n}\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n"));
                await stream.WriteAsync(body);
                client.Client.Shutdown(SocketShutdown.Send);
                break;
            case RawReply.Truncated:
                await stream.WriteAsync(Encoding.ASCII.GetBytes(
                    $"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {DeclaredLength}\r\nConnection: close\r\n\r\n"));
                await stream.WriteAsync(Encoding.ASCII.GetBytes("{\"partial\":\"" + new string('x', SentLength - 12)));
                await stream.FlushAsync();
                client.Client.Shutdown(SocketShutdown.Send); // a clean FIN: the body simply ends 700 bytes early
                break;
            case RawReply.Reset:
                client.Client.LingerState = new LingerOption(true, 0); // closing now sends RST, not FIN
                break;
        }
    }

    // Reads one request: the head up to the blank line, then Content-Length bytes or chunks up to the last one.
    private static async Task<bool> ReadRequestAsync(NetworkStream stream)
    {
        var received = new List<byte>();
        var buffer = new byte[8192];
        int headEnd;
        while ((headEnd = IndexOf(received, "\r\n\r\n"u8)) < 0)
        {
            var read = await stream.ReadAsync(buffer);
            if (read == 0)
            {
                return false;
            }

            received.AddRange(buffer.AsSpan(0, read));
        }

        var head = Encoding.ASCII.GetString([.. received.GetRange(0, headEnd)]);
        var lines = head.Split("\r\n");
        var contentLength = lines.Select(l => l.Split(':', 2)).Where(p => p.Length == 2 && p[0].Trim().Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            .Select(p => int.Parse(p[1].Trim(), System.Globalization.CultureInfo.InvariantCulture)).FirstOrDefault();
        var chunked = lines.Any(l => l.StartsWith("Transfer-Encoding:", StringComparison.OrdinalIgnoreCase) && l.Contains("chunked", StringComparison.OrdinalIgnoreCase));
        var bodyStart = headEnd + 4;
        while (chunked ? IndexOf(received.GetRange(bodyStart, received.Count - bodyStart), "0\r\n\r\n"u8) < 0 : received.Count - bodyStart < contentLength)
        {
            var read = await stream.ReadAsync(buffer);
            if (read == 0)
            {
                return false;
            }

            received.AddRange(buffer.AsSpan(0, read));
        }

        return true;
    }

    private static int IndexOf(List<byte> bytes, ReadOnlySpan<byte> pattern) =>
        System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes).IndexOf(pattern);
}
