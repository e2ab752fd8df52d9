using System.Data.Common;

namespace Idem;

/// <summary>
/// A store whose completion can commit inside the caller's database transaction, for
/// <see cref="IdempotencyPolicy.JoinedTransaction"/>: the claim commits alone (so duplicates see it and wait), then the
/// operation's writes and the completion, fenced by the owner's token, commit together.
/// </summary>
/// <remarks>
/// Implemented by the SQLite and PostgreSQL stores. The transaction must be on the store's own database (the same
/// SQLite file; the same PostgreSQL database), which <see cref="BeginTransactionAsync"/> checks.
/// </remarks>
public interface ITransactionalIdempotencyStore : IRecoveryPointStore
{
    /// <summary>Opens a new connection to the store's database, for an operation that brings none of its own.</summary>
    /// <param name="cancellationToken">Cancels the open.</param>
    ValueTask<DbConnection> OpenConnectionAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Begins a transaction on <paramref name="connection"/> (opened when closed), after checking that it reaches the
    /// store's database; on SQLite it takes the write lock at once (<c>BEGIN IMMEDIATE</c>), so it can never fail
    /// half-way to upgrade a read lock.
    /// </summary>
    /// <param name="connection">The connection the operation writes through (Idem's or, for example, a <c>DbContext</c>'s).</param>
    /// <param name="cancellationToken">Cancels the begin.</param>
    /// <exception cref="InvalidOperationException">The connection reaches another database than the store's.</exception>
    ValueTask<DbTransaction> BeginTransactionAsync(DbConnection connection, CancellationToken cancellationToken);

    /// <summary>
    /// Inside <paramref name="transaction"/>: stores the response and marks the record completed, only while
    /// <paramref name="ownerToken"/> still owns it. The row stays locked until the transaction ends, so no takeover can
    /// slip between this check and the commit.
    /// </summary>
    /// <returns><see langword="false"/> when the owner lost the claim: the caller must roll back everything.</returns>
    ValueTask<bool> CompleteAsync(DbTransaction transaction, string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken);

    /// <summary>
    /// Completes the key inside <paramref name="transaction"/> (fenced, as <see cref="CompleteAsync"/>) and commits the
    /// transaction, when the owner still holds the key. A store may send both in one round trip; by default it is
    /// <see cref="CompleteAsync"/> followed by <see cref="DbTransaction.CommitAsync(CancellationToken)"/>.
    /// </summary>
    /// <returns>
    /// <see langword="false"/> when the owner lost the claim: nothing was committed and the caller must roll back.
    /// </returns>
    /// <exception cref="Exception">The commit failed (its outcome may be unknown when the connection broke): the caller rolls back and releases the key.</exception>
    async ValueTask<bool> CompleteAndCommitAsync(DbTransaction transaction, string key, Guid ownerToken, StoredResponse response, TimeSpan retention, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        if (!await CompleteAsync(transaction, key, ownerToken, response, retention, cancellationToken).ConfigureAwait(false))
        {
            return false;
        }

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>Inside <paramref name="transaction"/>: replaces the recorded recovery points, only while <paramref name="ownerToken"/> owns the key.</summary>
    /// <returns><see langword="false"/> when the owner lost the claim: the caller must roll back everything.</returns>
    ValueTask<bool> RecordPhasesAsync(DbTransaction transaction, string key, Guid ownerToken, ReadOnlyMemory<byte> phases, CancellationToken cancellationToken);

    /// <summary>
    /// Whether <paramref name="transaction"/> was already committed or rolled back (by the operation, which must not, or
    /// because its connection closed); providers show it differently.
    /// </summary>
    bool IsCompleted(DbTransaction transaction);

    /// <summary>Called after a transaction holding a completion committed: wakes this process's waiters for <paramref name="key"/>.</summary>
    void OnCompletionCommitted(string key);

    /// <summary>
    /// Called when the operation ends, before its writes commit with the completion or roll back: throws when the store
    /// saw the operation write to the store's database outside <paramref name="execution"/>'s joined transaction (for
    /// example through another connection), or when <paramref name="failure"/> is what such a write ends in, so the
    /// misuse is refused with a clear error at the first request instead of silently left outside. By default a store
    /// sees nothing. The PostgreSQL store watches Npgsql's commands while a joined operation runs; the SQLite store
    /// recognizes the busy error of a write that waited for the joined transaction's write lock.
    /// </summary>
    /// <param name="execution">The execution whose operation just ended.</param>
    /// <param name="failure">What the operation threw, or <see langword="null"/> when it returned.</param>
    /// <exception cref="InvalidOperationException">The operation wrote, or tried to write, outside the joined transaction.</exception>
    void ThrowIfWrittenOutside(IdempotentExecution execution, Exception? failure)
    {
    }
}

/// <summary>
/// A store that records recovery points (finished phases, see <see cref="IdempotentExecution.RunPhaseAsync{T}(string, Func{IdempotentPhase, ValueTask{T}}, System.Text.Json.JsonSerializerOptions?, CancellationToken)"/>)
/// against an in-flight key, so the owner that takes over after a crash skips them.
/// </summary>
/// <remarks>
/// The phases are read back through <see cref="IIdempotencyStore.GetAsync"/> as <see cref="IdempotencyRecord.Phases"/>.
/// A store that records phases must keep them through a takeover, drop them when it replaces a record past retention,
/// and, on <see cref="IIdempotencyStore.ReleaseAsync"/> of a record that has phases, keep the record in flight with its
/// lease ended instead of deleting it: a finished phase must never run again.
/// </remarks>
public interface IRecoveryPointStore : IIdempotencyStore
{
    /// <summary>Replaces the recorded recovery points of an in-flight key, only while <paramref name="ownerToken"/> owns it.</summary>
    /// <param name="key">The store key.</param>
    /// <param name="ownerToken">The owner.</param>
    /// <param name="phases">The encoded phases (opaque to the store; the executor encodes them); the store copies them.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns><see langword="false"/> when the owner lost the claim (fenced); nothing is written then.</returns>
    ValueTask<bool> RecordPhasesAsync(string key, Guid ownerToken, ReadOnlyMemory<byte> phases, CancellationToken cancellationToken);
}
