using Xunit;
using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http.Features;

namespace Idem.AspNetCore.Tests;

/// <summary>
/// The capture tees the server's response pipe. Kestrel keeps accepting writes after its client left, so the
/// functional tests cannot show what happens when a pipe reports its reader gone; a pipe with a completed reader can.
/// </summary>
public sealed class ResponseCaptureFeatureTests
{
    [Fact]
    public async Task Pipe_writes_reach_the_client_and_the_capture_and_capturing_goes_on_after_the_reader_completes()
    {
        var pipe = new Pipe();
        using var capture = new ResponseCaptureStream(Stream.Null, limit: 1024);
        var feature = new ResponseCaptureFeature(new PipeOnlyBody(pipe.Writer), capture);

        await feature.Writer.WriteAsync("first,"u8.ToArray());
        var toClient = await pipe.Reader.ReadAsync();
        var sent = toClient.Buffer.ToArray();
        pipe.Reader.AdvanceTo(toClient.Buffer.End);
        await pipe.Reader.CompleteAsync(); // the client is gone

        var afterGone = await feature.Writer.WriteAsync("second,"u8.ToArray());
        feature.Writer.Write("third"u8);
        await feature.CompleteAsync();

        Assert.Equal("first,"u8.ToArray(), sent);
        Assert.True(feature.ClientGone);
        Assert.False(afterGone.IsCompleted); // the handler is told to go on writing: its whole response is stored
        Assert.Equal("first,second,third"u8.ToArray(), capture.Captured.ToArray());
    }

    [Fact]
    public async Task Stream_and_pipe_writes_are_captured_in_the_order_they_were_made_and_the_limit_drops_the_copy()
    {
        var pipe = new Pipe();
        using var capture = new ResponseCaptureStream(pipe.Writer.AsStream(leaveOpen: true), limit: 10);
        var feature = new ResponseCaptureFeature(new PipeOnlyBody(pipe.Writer), capture);

        await feature.Stream.WriteAsync("ab"u8.ToArray());
        await feature.Writer.WriteAsync("cd"u8.ToArray());
        await feature.Stream.WriteAsync("ef"u8.ToArray());
        Assert.Equal("abcdef"u8.ToArray(), capture.Captured.ToArray());

        await feature.Writer.WriteAsync("ghijk"u8.ToArray());
        Assert.True(capture.Overflowed);
    }

    private sealed class PipeOnlyBody(PipeWriter writer) : IHttpResponseBodyFeature
    {
        public Stream Stream => writer.AsStream(leaveOpen: true);

        public PipeWriter Writer => writer;

        public Task CompleteAsync() => writer.CompleteAsync().AsTask();

        public void DisableBuffering()
        {
        }

        public Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default) => throw new NotSupportedException();

        public Task StartAsync(CancellationToken cancellationToken = default) => Task.CompletedTask;
    }
}
