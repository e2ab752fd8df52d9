using System.Globalization;
using System.Runtime.InteropServices;

namespace Idem.Sqlite;

/// <summary>One queued write, applied by the writer loop inside a group transaction.</summary>
internal interface ISqliteWriteOperation
{
    /// <summary>Moves the operation from pending to running; <see langword="false"/> when its caller gave up.</summary>
    bool TryStart();

    /// <summary>Runs the statement(s) and keeps the result; not visible to the caller until <see cref="Publish"/>.</summary>
    void Execute(SqliteWriteSession session, TimeProvider timeProvider);

    /// <summary>Hands the kept result to the caller, once its transaction has committed.</summary>
    void Publish();

    /// <summary>Fails the caller (the operation was not applied).</summary>
    void Fail(Exception error);
}

/// <summary>
/// Base of the queued writes: the caller awaits <see cref="TaskCompletionSource{TResult}.Task"/>; cancellation is honoured
/// until the writer starts the operation (after that it is one statement inside a transaction that already holds the
/// write lock, so it cannot wait), and a cancelled operation is never applied.
/// </summary>
internal abstract class SqliteWriteOperation<T> : TaskCompletionSource<T>, ISqliteWriteOperation
{
    private const int Pending = 0, Running = 1, Cancelled = 2;
    private int _state;
    private T _result = default!;
    private CancellationToken _cancellationToken;
    private CancellationTokenRegistration _registration;

    protected SqliteWriteOperation()
        : base(TaskCreationOptions.RunContinuationsAsynchronously)
    {
    }

    /// <summary>Registers the caller's cancellation; call before enqueuing.</summary>
    public void Watch(CancellationToken cancellationToken)
    {
        if (cancellationToken.CanBeCanceled)
        {
            _cancellationToken = cancellationToken;
            _registration = cancellationToken.UnsafeRegister(static state => ((SqliteWriteOperation<T>)state!).TryCancel(), this);
        }
    }

    public bool TryStart()
    {
        if (Interlocked.CompareExchange(ref _state, Running, Pending) != Pending)
        {
            return false;
        }

        _registration.Dispose();
        return true;
    }

    public void Execute(SqliteWriteSession session, TimeProvider timeProvider) => _result = Run(session, timeProvider);

    public void Publish()
    {
        TrySetResult(_result);
        _result = default!;
    }

    public void Fail(Exception error)
    {
        _registration.Dispose();
        TrySetException(error);
    }

    protected abstract T Run(SqliteWriteSession session, TimeProvider timeProvider);

    private void TryCancel()
    {
        if (Interlocked.CompareExchange(ref _state, Cancelled, Pending) == Pending)
        {
            TrySetCanceled(_cancellationToken);
        }
    }
}

internal sealed class SqliteClaimOperation(ClaimRequest request) : SqliteWriteOperation<ClaimResult>
{
    protected override ClaimResult Run(SqliteWriteSession s, TimeProvider timeProvider)
    {
        var now = timeProvider.GetUtcNow();
        var leaseExpiresAt = (now + request.Lease).ToUnixTimeMilliseconds();
        var expiresAt = (now + request.Retention).ToUnixTimeMilliseconds();
        s.ClaimKey.Value = request.Key;
        s.ClaimFingerprint.Value = request.Fingerprint;
        s.ClaimOwner.Value = SqliteStatements.Owner(request.OwnerToken);
        s.ClaimLease.Value = leaseExpiresAt;
        s.ClaimExpires.Value = expiresAt;
        s.ClaimNow.Value = now.ToUnixTimeMilliseconds();
        s.ClaimPrincipalHash.Value = (object?)request.Metadata?.PrincipalHash ?? DBNull.Value;
        s.ClaimOperation.Value = (object?)request.Metadata?.Operation ?? DBNull.Value;
        var returned = s.Claim.ExecuteScalar();
        if (returned is not null and not DBNull)
        {
            var record = new IdempotencyRecord
            {
                Key = request.Key,
                State = IdempotencyRecordState.InFlight,
                Fingerprint = request.Fingerprint,
                OwnerToken = request.OwnerToken,
                LeaseExpiresAt = DateTimeOffset.FromUnixTimeMilliseconds(leaseExpiresAt),
                ExpiresAt = DateTimeOffset.FromUnixTimeMilliseconds(expiresAt),
                Metadata = request.Metadata,
            };
            return new ClaimResult(ClaimStatus.Claimed, record, Convert.ToInt64(returned, CultureInfo.InvariantCulture) != 0);
        }

        // The row that blocked the claim, read in the same transaction: live, and completed or in flight under
        // someone else's lease.
        s.SelectKey.Value = request.Key;
        var existing = SqliteStatements.ReadRecord(s.Select)
            ?? throw new InvalidOperationException($"The claim of key '{request.Key}' was refused, yet no record was found in the same transaction.");
        return new ClaimResult(existing.State == IdempotencyRecordState.Completed ? ClaimStatus.Completed : ClaimStatus.InFlight, existing);
    }
}

internal sealed class SqliteCompleteOperation(string key, Guid owner, StoredResponse response, TimeSpan retention) : SqliteWriteOperation<bool>
{
    // Encoded by the caller, off the writer loop.
    private readonly byte[] _headers = StoredResponseHeaders.Encode(response.Headers);
    private readonly byte[] _body = AsArray(response.Body);

    protected override bool Run(SqliteWriteSession s, TimeProvider timeProvider)
    {
        var now = timeProvider.GetUtcNow();
        s.CompleteKey.Value = key;
        s.CompleteOwner.Value = SqliteStatements.Owner(owner);
        s.CompleteNow.Value = now.ToUnixTimeMilliseconds();
        s.CompleteExpires.Value = (now + retention).ToUnixTimeMilliseconds();
        s.CompleteStatus.Value = response.StatusCode;
        s.CompleteHeaders.Value = _headers;
        s.CompleteBody.Value = _body;
        s.CompleteOmitted.Value = response.BodyOmitted ? 1 : 0;
        return s.Complete.ExecuteNonQuery() != 0;
    }

    private static byte[] AsArray(ReadOnlyMemory<byte> memory) =>
        MemoryMarshal.TryGetArray(memory, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : memory.ToArray();
}

internal sealed class SqliteRenewOperation(string key, Guid owner, TimeSpan lease) : SqliteWriteOperation<bool>
{
    protected override bool Run(SqliteWriteSession s, TimeProvider timeProvider)
    {
        var now = timeProvider.GetUtcNow();
        s.RenewKey.Value = key;
        s.RenewOwner.Value = SqliteStatements.Owner(owner);
        s.RenewNow.Value = now.ToUnixTimeMilliseconds();
        s.RenewLease.Value = (now + lease).ToUnixTimeMilliseconds();
        return s.Renew.ExecuteNonQuery() != 0;
    }
}

internal sealed class SqliteReleaseOperation(string key, Guid owner) : SqliteWriteOperation<bool>
{
    protected override bool Run(SqliteWriteSession s, TimeProvider timeProvider)
    {
        s.ReleaseKey.Value = key;
        s.ReleaseOwner.Value = SqliteStatements.Owner(owner);
        s.ReleaseNow.Value = timeProvider.GetUtcNow().ToUnixTimeMilliseconds();
        return s.Release.ExecuteNonQuery() != 0;
    }
}

internal sealed class SqliteRecordPhasesOperation(string key, Guid owner, byte[] phases) : SqliteWriteOperation<bool>
{
    protected override bool Run(SqliteWriteSession s, TimeProvider timeProvider)
    {
        s.RecordPhasesKey.Value = key;
        s.RecordPhasesOwner.Value = SqliteStatements.Owner(owner);
        s.RecordPhasesNow.Value = timeProvider.GetUtcNow().ToUnixTimeMilliseconds();
        s.RecordPhasesValue.Value = phases;
        return s.RecordPhases.ExecuteNonQuery() != 0;
    }
}

internal sealed class SqlitePurgeOperation(int maxRecords) : SqliteWriteOperation<int>
{
    protected override int Run(SqliteWriteSession s, TimeProvider timeProvider)
    {
        s.PurgeNow.Value = timeProvider.GetUtcNow().ToUnixTimeMilliseconds();
        s.PurgeMax.Value = maxRecords;
        return s.Purge.ExecuteNonQuery();
    }
}
