using System.Collections.Concurrent;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Idem.Gateway.FunctionalTests;

/// <summary>
/// The gateway exports traces over OTLP when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set, to a real receiver: over
/// http/protobuf, and over gRPC (the SDK's default protocol) to a receiver that speaks gRPC by hand on HTTP/2 without TLS.
/// </summary>
public sealed class OtlpTracingTests
{
    [Fact]
    public async Task With_an_OTLP_endpoint_the_gateway_exports_traces_and_a_replay_links_to_the_execution()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        await using var upstream = await CountingUpstream.StartAsync();
        string[] args =
        [
            "--OTEL_EXPORTER_OTLP_ENDPOINT", receiver.Address.ToString().TrimEnd('/'),
            "--OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
        ];
        var key = Http.NewKey();
        await using (var gateway = await GatewayUnderTest.StartAsync(upstream.Address, args))
        {
            var executed = await gateway.Client.SendAsync(Http.Post("/orders", key));
            var replayed = await gateway.Client.SendAsync(Http.Post("/orders", key));
            await Http.AssertReplayOfAsync(executed, replayed);
            Assert.False(replayed.Headers.Contains(IdempotencyDiagnostics.OriginTraceHeaderName));
            Assert.False(replayed.Content.Headers.Contains(IdempotencyDiagnostics.OriginTraceHeaderName));
        } // disposing the gateway flushes its exporter

        var spans = receiver.Spans();
        var idem = spans.Where(s => s.Name == "idem.execute").ToList();
        Assert.True(idem.Count == 2, $"idem.execute spans: {idem.Count}; all spans: {string.Join(", ", spans.Select(s => s.Name))}");
        var original = Assert.Single(idem, s => s.Links.Count == 0);
        var replay = Assert.Single(idem, s => s.Links.Count == 1);
        Assert.NotEqual(original.TraceId, replay.TraceId);
        Assert.Equal(original.TraceId, replay.Links[0].TraceId);
        Assert.Equal(original.SpanId, replay.Links[0].SpanId);

        // Each idem.execute runs inside the gateway's server span for its request, and the execution's trace reaches the
        // forwarded call to the upstream.
        foreach (var span in idem)
        {
            Assert.Contains(spans, s => s.SpanId == span.ParentSpanId && s.TraceId == span.TraceId && s.Kind == 2);
        }

        // (The test's own HttpClient is traced too, in this process: its client spans are the roots, without a parent.)
        Assert.Contains(spans, s => s.TraceId == original.TraceId && s.Kind == 3 && s.ParentSpanId.Length > 0);
        Assert.DoesNotContain(spans, s => s.TraceId == replay.TraceId && s.Kind == 3 && s.ParentSpanId.Length > 0); // a replay never calls the upstream
    }

    [Fact]
    public async Task With_only_an_OTLP_endpoint_the_gateway_exports_over_grpc_the_default_protocol()
    {
        await using var receiver = await OtlpReceiver.StartAsync(grpc: true);
        await using var upstream = await CountingUpstream.StartAsync();
        string[] args = ["--OTEL_EXPORTER_OTLP_ENDPOINT", receiver.Address.ToString().TrimEnd('/')]; // no protocol: grpc
        await using (var gateway = await GatewayUnderTest.StartAsync(upstream.Address, args))
        {
            Assert.Equal(HttpStatusCode.Created, (await gateway.Client.SendAsync(Http.Post("/orders", Http.NewKey()))).StatusCode);
        } // disposing the gateway flushes its exporter

        // The calls were gRPC: HTTP/2 to the TraceService's Export method, application/grpc, one length-prefixed message.
        Assert.NotEmpty(receiver.Calls);
        Assert.All(receiver.Calls, call => Assert.Equal(("HTTP/2", "application/grpc"), (call.Protocol, call.ContentType)));
        var spans = receiver.Spans();
        var execute = Assert.Single(spans, s => s.Name == "idem.execute");
        Assert.Contains(spans, s => s.SpanId == execute.ParentSpanId && s.TraceId == execute.TraceId && s.Kind == 2); // under the server span
        Assert.Equal(0, receiver.HttpProtobufPosts); // nothing came the http/protobuf way
    }

    [Fact]
    public async Task Without_an_OTLP_endpoint_no_tracer_listens_to_Idem()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address);
        Assert.Null(gateway.Services.GetService<OpenTelemetry.Trace.TracerProvider>());
    }

    internal sealed record OtlpLink(string TraceId, string SpanId);

    internal sealed record OtlpSpan(string TraceId, string SpanId, string ParentSpanId, string Name, int Kind, List<OtlpLink> Links);

    internal sealed record GrpcCall(string Protocol, string? ContentType);

    /// <summary>
    /// A minimal OTLP trace receiver: keeps every <c>POST /v1/traces</c> body (http/protobuf) or, with
    /// <c>grpc</c>, every message of a gRPC <c>TraceService/Export</c> call (HTTP/2 without TLS, answered by hand with an
    /// empty message and <c>grpc-status: 0</c>), and decodes spans from the protobuf.
    /// </summary>
    private sealed class OtlpReceiver : IAsyncDisposable
    {
        private const string ExportPath = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
        private readonly WebApplication _app;
        private readonly ConcurrentQueue<byte[]> _bodies = new();
        private readonly ConcurrentQueue<GrpcCall> _calls = new();
        private int _httpProtobufPosts;

        private OtlpReceiver(WebApplication app) => _app = app;

        public Uri Address { get; private set; } = null!;

        public IReadOnlyCollection<GrpcCall> Calls => _calls;

        public int HttpProtobufPosts => Volatile.Read(ref _httpProtobufPosts);

        public static async Task<OtlpReceiver> StartAsync(bool grpc = false)
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0, listen =>
                listen.Protocols = grpc ? Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2 : Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http1AndHttp2));
            builder.Logging.ClearProviders();
            var app = builder.Build();
            var receiver = new OtlpReceiver(app);
            app.MapPost("/v1/traces", async (HttpContext context) =>
            {
                Interlocked.Increment(ref receiver._httpProtobufPosts);
                using var body = new MemoryStream();
                await context.Request.Body.CopyToAsync(body);
                receiver._bodies.Enqueue(body.ToArray());
                context.Response.ContentType = "application/x-protobuf";
                return Results.Bytes([], "application/x-protobuf"); // an empty ExportTraceServiceResponse
            });
            app.MapPost(ExportPath, async (HttpContext context) =>
            {
                receiver._calls.Enqueue(new GrpcCall(context.Request.Protocol, context.Request.ContentType));
                using var body = new MemoryStream();
                await context.Request.Body.CopyToAsync(body);

                // gRPC framing: per message a compressed flag (0: the exporter does not compress) and a big-endian length.
                var bytes = body.ToArray();
                for (var i = 0; i + 5 <= bytes.Length;)
                {
                    Assert.Equal(0, bytes[i]);
                    var length = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(i + 1, 4));
                    receiver._bodies.Enqueue(bytes[(i + 5)..(i + 5 + length)]);
                    i += 5 + length;
                }

                context.Response.ContentType = "application/grpc";
                context.Response.DeclareTrailer("grpc-status");
                await context.Response.Body.WriteAsync(new byte[5]); // one empty ExportTraceServiceResponse
                context.Response.AppendTrailer("grpc-status", "0");
            });
            await app.StartAsync();
            receiver.Address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
            return receiver;
        }

        public List<OtlpSpan> Spans()
        {
            var spans = new List<OtlpSpan>();
            foreach (var body in _bodies)
            {
                foreach (var resourceSpans in Fields(body, 1))
                {
                    foreach (var scopeSpans in Fields(resourceSpans, 2))
                    {
                        foreach (var span in Fields(scopeSpans, 2))
                        {
                            spans.Add(new OtlpSpan(
                                Hex(Fields(span, 1).FirstOrDefault()),
                                Hex(Fields(span, 2).FirstOrDefault()),
                                Hex(Fields(span, 4).FirstOrDefault()),
                                Encoding.UTF8.GetString(Fields(span, 5).FirstOrDefault() ?? []),
                                (int)(Varints(span, 6).FirstOrDefault()),
                                Fields(span, 13).Select(l => new OtlpLink(Hex(Fields(l, 1).FirstOrDefault()), Hex(Fields(l, 2).FirstOrDefault()))).ToList()));
                        }
                    }
                }
            }

            return spans;
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }

        private static string Hex(byte[]? bytes) => bytes is null ? string.Empty : Convert.ToHexStringLower(bytes);

        // Protobuf wire format: each field is a varint key (number << 3 | wire type), then its value.
        private static List<byte[]> Fields(byte[] message, int number) =>
            Walk(message).Where(f => f.Number == number && f.Bytes is not null).Select(f => f.Bytes!).ToList();

        private static List<ulong> Varints(byte[] message, int number) =>
            Walk(message).Where(f => f.Number == number && f.Bytes is null).Select(f => f.Value).ToList();

        private static List<(int Number, byte[]? Bytes, ulong Value)> Walk(byte[] message)
        {
            var fields = new List<(int, byte[]?, ulong)>();
            var i = 0;
            while (i < message.Length)
            {
                var key = ReadVarint(message, ref i);
                var number = (int)(key >> 3);
                switch (key & 7)
                {
                    case 0:
                        fields.Add((number, null, ReadVarint(message, ref i)));
                        break;
                    case 1:
                        i += 8;
                        break;
                    case 2:
                        var length = (int)ReadVarint(message, ref i);
                        fields.Add((number, message[i..(i + length)], 0));
                        i += length;
                        break;
                    case 5:
                        i += 4;
                        break;
                    default:
                        throw new InvalidDataException($"Unexpected wire type {key & 7}.");
                }
            }

            return fields;
        }

        private static ulong ReadVarint(byte[] data, ref int i)
        {
            ulong value = 0;
            for (var shift = 0; shift < 64; shift += 7)
            {
                var b = data[i++];
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80)
                {
                    return value;
                }
            }

            throw new InvalidDataException("Varint too long.");
        }
    }
}
