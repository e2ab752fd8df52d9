using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Xunit.Abstractions;

namespace Idem.Gateway.FunctionalTests;

/// <summary>10,000 malformed requests over raw loopback sockets: the gateway answers 4xx (or closes), never 5xx, and stays up.</summary>
public sealed class MalformedRequestTests(ITestOutputHelper output)
{
    private const int Total = 10_000;
    private const int Concurrency = 16;

    private static readonly Func<int, Uri, byte[]>[] Kinds =
    [
        (i, a) => Request(a, "POST", "/orders", [("Idempotency-Key", "")], "{}"),
        (i, a) => Request(a, "POST", "/orders", [("Idempotency-Key", new string('k', 300))], "{}"),
        (i, a) => Request(a, "POST", "/orders", [("Idempotency-Key", $"caf\u00e9-{i}")], "{}"),
        (i, a) => Request(a, "POST", "/orders", [("Idempotency-Key", $"a-{i}"), ("Idempotency-Key", $"b-{i}")], "{}"),
        (i, a) => Concat(Head(a, "POST", "/orders", [("Content-Length", "2")]), [.. "Idempotency-Key: bad-"u8, 0xC3, 0x28, .. "\r\n\r\n{}"u8]),
        (i, a) => Request(a, "POST", "/orders", [("Idempotency-Key", $"k-{i}"), ("X-Big", new string('x', 40_000))], "{}"),
        (i, a) => Request(a, "POST", "/orders", [.. Enumerable.Range(0, 150).Select(h => ($"X-H{h}", "v")), ("Idempotency-Key", $"k-{i}")], "{}"),
        (i, a) => Request(a, "POST", "/orders/%C3%28%FF", [("Idempotency-Key", $"k-{i}")], "{}"),
        (i, a) => Concat([.. "POST /orders/"u8, 0xFF, 0xFE, .. " HTTP/1.1\r\n"u8], Encoding.ASCII.GetBytes($"Host: {a.Authority}\r\nContent-Length: 0\r\n\r\n")),
        (i, a) => Concat(Head(a, "POST", "/orders", [("Idempotency-Key", $"k-{i}"), ("Content-Type", "application/json"), ("Content-Length", "6")]), [.. "{\""u8, 0xC3, 0x28, .. "\"}"u8]),
        (i, a) => Head(a, "POST", "/orders", [("Idempotency-Key", $"k-{i}"), ("Content-Length", "1000")]), // truncated: the socket half-closes after the head
        (i, a) => Head(a, "POST", "/orders", [("Idempotency-Key", $"k-{i}"), ("Content-Length", "50000000")]),
        (i, a) => Concat(Head(a, "POST", "/orders", [("Idempotency-Key", $"k-{i}"), ("Transfer-Encoding", "chunked")]), "zz\r\nhello\r\n0\r\n\r\n"u8.ToArray()),
        (i, a) => Concat(Head(a, "POST", "/orders", [("Idempotency-Key", $"k-{i}"), ("Transfer-Encoding", "chunked")]), Chunked(new byte[70_000])),
        (i, a) => Head(a, "POST", "/orders", [("Idempotency-Key", $"k-{i}"), ("Content-Length", "-5")]),
        (i, a) => Request(a, "POST", "/orders", [("Idempotency-Key", "\"unterminated")], "{}"),
        (i, a) => Concat(Head(a, "POST", "/orders", [("Content-Length", "2")]), [.. "Idempotency-Key: ctl"u8, 0x01, .. "x\r\n\r\n{}"u8]),
        (i, a) => "GARBAGE\r\n\r\n"u8.ToArray(),
        (i, a) => "POST /orders HTTP/1.1\r\nContent-Length: 0\r\n\r\n"u8.ToArray(),
        (i, a) => Request(a, "POST", "/orders", [("Idempotency-Key", "shared-key-for-mismatches")], $"{{\"n\":{i}}}"),
        (i, a) => Concat(Head(a, "POST", "/orders", [("Idempotency-Key", $"k-{i}"), ("Content-Length", "10"), ("Content-Length", "12")]), "0123456789"u8.ToArray()),
        (i, a) => Request(a, "PATCH", "/orders", [("Idempotency-Key", $"k-{i}"), ("Content-Type", "application/json; charset=\u00ff")], "{}"),
    ];

    [Fact]
    public async Task Ten_thousand_malformed_requests_get_no_5xx_and_the_gateway_stays_up()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address, ["--Idem:MaxRequestBodyBytes", "65536"]);
        var statuses = new ConcurrentDictionary<int, int>();
        var serverErrors = new ConcurrentQueue<string>();
        var next = -1;
        var clock = Stopwatch.StartNew();
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(3));

        await Task.WhenAll(Enumerable.Range(0, Concurrency).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < Total && !deadline.IsCancellationRequested)
            {
                var kind = i % Kinds.Length;
                var status = await SendAsync(gateway.Address, Kinds[kind](i, gateway.Address), halfClose: kind == 10);
                statuses.AddOrUpdate(status, 1, static (_, c) => c + 1);
                if (status >= 500)
                {
                    serverErrors.Enqueue($"kind {kind}: {status}");
                }
            }
        })));

        var summary = string.Join(", ", statuses.OrderBy(s => s.Key).Select(s => $"{(s.Key == 0 ? "closed" : s.Key.ToString())}×{s.Value}"));
        output.WriteLine($"{Total} requests in {clock.Elapsed}: {summary}");
        Assert.False(deadline.IsCancellationRequested, $"took longer than the bound; {summary}");
        Assert.Equal(Total, statuses.Values.Sum());
        Assert.True(serverErrors.IsEmpty, $"5xx from the gateway: {string.Join("; ", serverErrors.Distinct().Take(10))} ({summary})");
        Assert.True(statuses.Where(s => s.Key is >= 400 and < 500).Sum(s => s.Value) > Total / 2, summary);

        var health = await gateway.Client.GetAsync("/healthz");
        var normal = await gateway.Client.SendAsync(Http.Post("/orders", Http.NewKey()));
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Equal(HttpStatusCode.Created, normal.StatusCode);
        Assert.True(clock.Elapsed < TimeSpan.FromMinutes(3));
    }

    private static byte[] Head(Uri address, string method, string path, IEnumerable<(string Name, string Value)> headers)
    {
        var head = new StringBuilder($"{method} {path} HTTP/1.1\r\nHost: {address.Authority}\r\nConnection: close\r\n");
        foreach (var (name, value) in headers)
        {
            head.Append(name).Append(": ").Append(value).Append("\r\n");
        }

        return Encoding.Latin1.GetBytes(head.Append("\r\n").ToString());
    }

    private static byte[] Request(Uri address, string method, string path, IEnumerable<(string Name, string Value)> headers, string body)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        return Concat(Head(address, method, path, [.. headers, ("Content-Length", bytes.Length.ToString())]), bytes);
    }

    private static byte[] Chunked(byte[] body) => Concat(Encoding.ASCII.GetBytes($"{body.Length:x}\r\n"), body, "\r\n0\r\n\r\n"u8.ToArray());

    private static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    /// <summary>Sends the bytes on a fresh connection; returns the response status, or 0 when the server closed without one.</summary>
    private static async Task<int> SendAsync(Uri address, byte[] request, bool halfClose)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        try
        {
            await socket.ConnectAsync(IPAddress.Loopback, address.Port, timeout.Token);
            await socket.SendAsync(request, SocketFlags.None, timeout.Token);
            if (halfClose)
            {
                socket.Shutdown(SocketShutdown.Send);
            }

            var buffer = new byte[4096];
            var received = 0;
            while (received < 12)
            {
                var n = await socket.ReceiveAsync(buffer.AsMemory(received), SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    break;
                }

                received += n;
            }

            var line = Encoding.Latin1.GetString(buffer, 0, received);
            return line.StartsWith("HTTP/1.1 ", StringComparison.Ordinal) && received >= 12 ? int.Parse(line.AsSpan(9, 3)) : 0;
        }
        catch (SocketException)
        {
            return 0; // reset by the server after refusing the request
        }
    }
}
