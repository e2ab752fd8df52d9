using System.Net.Sockets;
using System.Text;

namespace Idem.AspNetCore.Tests;

/// <summary>Sends bytes exactly as written, for requests HttpClient refuses to produce (repeated headers, raw non-ASCII).</summary>
internal static class RawHttp
{
    public sealed record Response(int Status, IReadOnlyList<KeyValuePair<string, string>> Headers, string Body)
    {
        public string? Header(string name) => Headers.FirstOrDefault(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Value;
    }

    public static async Task<Response> SendAsync(Uri address, string method, string path, IEnumerable<(string Name, string Value)> headers, byte[] body)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(address.Host, address.Port);
        await using var stream = client.GetStream();
        var head = new StringBuilder();
        head.Append($"{method} {path} HTTP/1.1\r\nHost: {address.Authority}\r\nConnection: close\r\nContent-Length: {body.Length}\r\n");
        foreach (var (name, value) in headers)
        {
            head.Append($"{name}: {value}\r\n");
        }

        head.Append("\r\n");
        await stream.WriteAsync(Encoding.Latin1.GetBytes(head.ToString()));
        await stream.WriteAsync(body);
        using var reader = new StreamReader(stream, Encoding.Latin1);
        var all = await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(30));
        var split = all.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        var lines = all[..split].Split("\r\n");
        var status = int.Parse(lines[0].Split(' ')[1]);
        var parsed = lines.Skip(1).Select(l => l.Split(':', 2)).Select(p => new KeyValuePair<string, string>(p[0].Trim(), p[1].Trim())).ToList();
        var responseBody = all[(split + 4)..];
        if (parsed.Any(h => h.Key.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase)))
        {
            responseBody = Dechunk(responseBody);
        }

        return new Response(status, parsed, responseBody);
    }

    private static string Dechunk(string chunked)
    {
        var result = new StringBuilder();
        var position = 0;
        while (true)
        {
            var lineEnd = chunked.IndexOf("\r\n", position, StringComparison.Ordinal);
            var size = Convert.ToInt32(chunked[position..lineEnd].Split(';')[0], 16);
            if (size == 0)
            {
                return result.ToString();
            }

            result.Append(chunked, lineEnd + 2, size);
            position = lineEnd + 2 + size + 2;
        }
    }
}
