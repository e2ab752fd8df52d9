using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Idem.AspNetCore;

/// <summary>
/// The response body while a protected handler runs: everything written reaches the client and the capture, through
/// the <see cref="Stream"/> or the <see cref="Writer"/>. The writer hands out the server's own pipe memory and copies
/// what was written on <see cref="PipeWriter.Advance"/>, so serializers that write to the pipe (minimal APIs, MVC) pay
/// one copy instead of an intermediate pipe and stream (what <see cref="StreamResponseBodyFeature"/> would add).
/// </summary>
internal sealed class ResponseCaptureFeature(IHttpResponseBodyFeature original, ResponseCaptureStream capture) : IHttpResponseBodyFeature
{
    private CapturePipeWriter? _writer;
    private bool _completed;

    public Stream Stream => capture;

    public PipeWriter Writer => _writer ??= new CapturePipeWriter(original.Writer, capture);

    /// <summary>Whether writing to the client failed or the client went away; capturing went on regardless.</summary>
    public bool ClientGone => capture.ClientGone || _writer?.ClientGone == true;

    public void DisableBuffering() => original.DisableBuffering();

    public Task StartAsync(CancellationToken cancellationToken = default) => original.StartAsync(cancellationToken);

    public Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default) =>
        SendFileFallback.SendFileAsync(capture, path, offset, count, cancellationToken);

    /// <summary>Flushes what the handler wrote; the client's response itself is completed by the server afterwards.</summary>
    public async Task CompleteAsync()
    {
        if (_completed)
        {
            return;
        }

        _completed = true;
        if (_writer is not null)
        {
            await _writer.FlushAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Tees the server's response pipe into the capture. After the client is gone, it writes to scratch memory.</summary>
    private sealed class CapturePipeWriter(PipeWriter inner, ResponseCaptureStream capture) : PipeWriter
    {
        private Memory<byte> _current;
        private byte[]? _scratch;

        public bool ClientGone { get; private set; }

        public override bool CanGetUnflushedBytes => !ClientGone && inner.CanGetUnflushedBytes;

        public override long UnflushedBytes => ClientGone ? 0 : inner.UnflushedBytes;

        public override Memory<byte> GetMemory(int sizeHint = 0)
        {
            if (ClientGone)
            {
                var size = Math.Max(sizeHint, 4096);
                if (_scratch is null || _scratch.Length < size)
                {
                    ReturnScratch();
                    _scratch = ArrayPool<byte>.Shared.Rent(size);
                }

                return _current = _scratch;
            }

            return _current = inner.GetMemory(sizeHint);
        }

        public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

        public override void Advance(int bytes)
        {
            capture.Capture(_current.Span[..bytes]);
            _current = default;
            if (!ClientGone)
            {
                inner.Advance(bytes);
            }
        }

        public override async ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            if (!ClientGone)
            {
                try
                {
                    var result = await inner.FlushAsync(cancellationToken).ConfigureAwait(false);
                    if (result.IsCanceled)
                    {
                        return result;
                    }

                    ClientGone = result.IsCompleted;
                }
                catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
                {
                    // The client is gone; the work is not. Keep capturing for the retry.
                    ClientGone = true;
                }
            }

            // Never "completed": the handler must write its whole response, which is stored for the retry.
            return default;
        }

        public override void CancelPendingFlush() => inner.CancelPendingFlush();

        public override void Complete(Exception? exception = null) => ReturnScratch();

        private void ReturnScratch()
        {
            if (_scratch is not null)
            {
                ArrayPool<byte>.Shared.Return(_scratch);
                _scratch = null;
            }
        }
    }
}
