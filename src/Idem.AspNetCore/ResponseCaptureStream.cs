using System.Buffers;

namespace Idem.AspNetCore;

/// <summary>
/// Writes through to the client and keeps a copy up to a limit, in a pooled buffer returned on dispose. When the
/// client goes away, writes to it stop but capturing goes on, so the response can still be stored for the retry.
/// </summary>
internal sealed class ResponseCaptureStream(Stream inner, int limit) : Stream
{
    private byte[]? _buffer = [];
    private int _length;
    private bool _innerGone;

    public bool Overflowed => _buffer is null;

    /// <summary>Whether a write to the client failed because it went away.</summary>
    public bool ClientGone => _innerGone;

    public long BytesWritten { get; private set; }

    /// <summary>The captured bytes; valid until the stream is disposed.</summary>
    public ReadOnlyMemory<byte> Captured => _buffer is null ? ReadOnlyMemory<byte>.Empty : _buffer.AsMemory(0, _length);

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

    /// <summary>Keeps a copy of bytes that went to the client another way (the response PipeWriter).</summary>
    internal void Capture(ReadOnlySpan<byte> bytes)
    {
        BytesWritten += bytes.Length;
        if (_buffer is null)
        {
            return;
        }

        var needed = _length + bytes.Length;
        if (needed > limit)
        {
            // Past the limit the copy is useless; drop it instead of holding the whole body twice.
            ReturnBuffer();
            _buffer = null;
            return;
        }

        if (needed > _buffer.Length)
        {
            var larger = ArrayPool<byte>.Shared.Rent(Math.Max(needed, Math.Min(limit, Math.Max(256, _buffer.Length * 2))));
            _buffer.AsSpan(0, _length).CopyTo(larger);
            ReturnBuffer();
            _buffer = larger;
        }

        bytes.CopyTo(_buffer.AsSpan(_length));
        _length = needed;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            ReturnBuffer();
            _buffer = null;
        }

        base.Dispose(disposing);
    }

    private void ReturnBuffer()
    {
        if (_buffer is { Length: > 0 } rented)
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }
}
