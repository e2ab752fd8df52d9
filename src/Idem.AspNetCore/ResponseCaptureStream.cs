namespace Idem.AspNetCore;

/// <summary>
/// Writes through to the client and keeps a copy up to a limit. When the client goes away, writes to it stop
/// but capturing goes on, so the response can still be stored for the retry.
/// </summary>
internal sealed class ResponseCaptureStream(Stream inner, int limit) : Stream
{
    private MemoryStream? _buffer = new();
    private bool _innerGone;

    public bool Overflowed => _buffer is null;

    public long BytesWritten { get; private set; }

    public ReadOnlyMemory<byte> Captured => _buffer is null ? ReadOnlyMemory<byte>.Empty : _buffer.GetBuffer().AsMemory(0, (int)_buffer.Length);

    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        Capture(buffer);
        if (!_innerGone)
        {
            try
            {
                inner.Write(buffer);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
            {
                _innerGone = true;
            }
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Capture(buffer.Span);
        if (!_innerGone)
        {
            try
            {
                await inner.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
            {
                // The client is gone; the work is not. Keep capturing for the retry.
                _innerGone = true;
            }
        }
    }

    public override void Flush()
    {
        if (!_innerGone)
        {
            try
            {
                inner.Flush();
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
            {
                _innerGone = true;
            }
        }
    }

    public override async Task FlushAsync(CancellationToken cancellationToken)
    {
        if (!_innerGone)
        {
            try
            {
                await inner.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
            {
                _innerGone = true;
            }
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    private void Capture(ReadOnlySpan<byte> bytes)
    {
        BytesWritten += bytes.Length;
        if (_buffer is null)
        {
            return;
        }

        if (_buffer.Length + bytes.Length > limit)
        {
            // Past the limit the copy is useless; drop it instead of holding the whole body twice.
            _buffer.Dispose();
            _buffer = null;
            return;
        }

        _buffer.Write(bytes);
    }
}
