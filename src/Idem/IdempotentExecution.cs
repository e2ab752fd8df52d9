using System.Data.Common;
using System.Text;
using System.Text.Json;

namespace Idem;

/// <summary>What the operation is given while it runs under a claim.</summary>
/// <remarks>
/// With <see cref="IdempotencyPolicy.JoinedTransaction"/>, the operation writes through <see cref="GetTransactionAsync(CancellationToken)"/>
/// and never commits: Idem commits the writes together with the key's completion. Work that calls other systems runs
/// in <see cref="RunPhaseAsync{T}(string, Func{IdempotentPhase, ValueTask{T}}, JsonSerializerOptions?, CancellationToken)"/>.
/// </remarks>
public sealed class IdempotentExecution
{
    private static readonly AsyncLocal<IdempotentExecution?> s_currentJoined = new();

    private readonly IdempotencyExecutor? _executor;
    private readonly IdempotencyPolicy? _policy;
    private readonly IRecoveryPointStore? _phaseStore;
    private readonly ITransactionalIdempotencyStore? _transactionalStore;
    private List<KeyValuePair<string, byte[]>>? _phases;
    private DbConnection? _connection;
    private bool _ownsConnection;
    private DbTransaction? _transaction;
    private Func<DbTransaction?, CancellationToken, ValueTask>? _transactionChanged;

    internal IdempotentExecution(string key, Guid ownerToken, CancellationToken cancellationToken)
    {
        Key = key;
        OwnerToken = ownerToken;
        CancellationToken = cancellationToken;
    }

    internal IdempotentExecution(IdempotencyExecutor executor, IdempotencyPolicy policy, string key, Guid ownerToken, bool tookOver, CancellationToken cancellationToken)
        : this(key, ownerToken, cancellationToken)
    {
        _executor = executor;
        _policy = policy;
        TookOver = tookOver;
        _phaseStore = executor.RecoveryPointStore;
        if (policy.JoinedTransaction)
        {
            _transactionalStore = executor.TransactionalStore!;
        }
    }

    /// <summary>
    /// The execution with a joined transaction whose operation is running on this asynchronous flow, or
    /// <see langword="null"/>; what data-layer integrations (Idem.EntityFrameworkCore) join automatically.
    /// </summary>
    public static IdempotentExecution? CurrentJoined => s_currentJoined.Value is { _transactionalStore: not null, LostClaim: false } current ? current : null;

    /// <summary>The store key being executed.</summary>
    public string Key { get; }

    /// <summary>
    /// The owner's fencing token: a handler that writes elsewhere can record it and refuse writes from an older owner.
    /// <see cref="Guid.Empty"/> when running unprotected (fail-open).
    /// </summary>
    public Guid OwnerToken { get; }

    /// <summary>Fires on the execution timeout or when the lease is lost; never because a caller went away.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>Whether this owner took the key over from one whose lease expired (it crashed or failed after a recovery point).</summary>
    public bool TookOver { get; }

    /// <summary>Whether the operation runs in a joined transaction (<see cref="IdempotencyPolicy.JoinedTransaction"/>).</summary>
    public bool IsJoinedTransaction => _transactionalStore is not null;

    /// <summary>The joined transaction, once begun; it changes after each recovery point (each phase commits it).</summary>
    public DbTransaction? Transaction => _transaction;

    /// <summary>Makes this execution <see cref="CurrentJoined"/> for the operation's flow (set in the executor's frame, so it ends with it).</summary>
    internal void MakeCurrent()
    {
        if (_transactionalStore is not null)
        {
            s_currentJoined.Value = this;
        }
    }

    /// <summary>Set when a fenced write found that this owner lost the key: everything was rolled back.</summary>
    internal bool LostClaim { get; private set; }

    /// <summary>
    /// The joined transaction, begun on first call on a connection Idem opens to the store's database. Write through it
    /// (<c>command.Transaction = transaction</c>) and never commit or roll it back: Idem commits it with the key's
    /// completion, or rolls it back when the operation fails or this owner lost the key.
    /// </summary>
    /// <param name="cancellationToken">Cancels opening the connection and beginning the transaction.</param>
    /// <exception cref="InvalidOperationException">The policy has no joined transaction.</exception>
#pragma warning disable RS0027 // The short overload is the common one; the long one takes its token explicitly.
    public ValueTask<DbTransaction> GetTransactionAsync(CancellationToken cancellationToken = default) =>
        _transaction is { } current
            ? ValueTask.FromResult(current)
            : BeginAsync(null, null, cancellationToken);
#pragma warning restore RS0027

    /// <summary>
    /// The joined transaction on the caller's own connection (for example a <c>DbContext</c>'s, which
    /// <c>Idem.EntityFrameworkCore</c> passes): begun on it on first call; <paramref name="transactionChanged"/> is told
    /// each time Idem replaces it (after each recovery point) and, with <see langword="null"/>, when it ends.
    /// </summary>
    /// <param name="connection">The connection to join; it must reach the store's database.</param>
    /// <param name="transactionChanged">Told of each new transaction on <paramref name="connection"/>, and of its end.</param>
    /// <param name="cancellationToken">Cancels beginning the transaction.</param>
    /// <exception cref="InvalidOperationException">
    /// The policy has no joined transaction, the transaction was already begun on another connection (a second
    /// connection's writes would commit outside it), or the connection reaches another database.
    /// </exception>
    public ValueTask<DbTransaction> GetTransactionAsync(DbConnection connection, Func<DbTransaction?, CancellationToken, ValueTask>? transactionChanged, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        return BeginAsync(connection, transactionChanged, cancellationToken);
    }

    /// <summary>
    /// The idempotency key to pass to the system a phase calls: derived from this execution's key and the phase's name,
    /// the same for every owner and every retry, so a call cut off mid-way and made again is deduplicated by the callee.
    /// </summary>
    /// <param name="phaseName">The phase's name.</param>
    public string GetPhaseKey(string phaseName)
    {
        ArgumentException.ThrowIfNullOrEmpty(phaseName);
        Span<byte> hash = stackalloc byte[32];
        Sha256.HashData(Encoding.UTF8.GetBytes(Key + "\n" + phaseName), hash);
        return Convert.ToHexStringLower(hash);
    }

    /// <summary>
    /// Runs a named phase once per key: a recovery point. When an earlier owner of this key finished the phase (it then
    /// crashed or failed later), the phase is skipped and its recorded result returned. Otherwise <paramref name="work"/>
    /// runs and its result is recorded against the key before this returns: in a joined transaction the phase's writes
    /// and its record commit together (and a new transaction begins for what follows); otherwise the record is one store
    /// write. Pass <see cref="IdempotentPhase.IdempotencyKey"/> to the system the phase calls.
    /// </summary>
    /// <typeparam name="T">The phase's result, recorded as JSON.</typeparam>
    /// <param name="name">The phase's name, unique within the operation and stable across releases.</param>
    /// <param name="work">The phase.</param>
    /// <param name="jsonOptions">How the result is serialized.</param>
    /// <param name="cancellationToken">
    /// Cancels the phase's work together with the execution's own token (<see cref="IdempotentPhase"/> carries both).
    /// A phase whose work finished is recorded regardless: its effects happened.
    /// </param>
    /// <returns>The phase's result, fresh or recorded.</returns>
    /// <exception cref="IdempotencyOwnershipLostException">This owner lost the key to a newer one; its writes were rolled back. Do not catch it.</exception>
    /// <exception cref="NotSupportedException">The store records no recovery points.</exception>
    public async ValueTask<T> RunPhaseAsync<T>(string name, Func<IdempotentPhase, ValueTask<T>> work, JsonSerializerOptions? jsonOptions = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(work);
        if (_executor is null || _phaseStore is null)
        {
            throw new NotSupportedException(_executor is null
                ? "Recovery points need a claimed key; this operation runs unprotected."
                : $"The idempotency store {_executor.Store.GetType().Name} records no recovery points (it does not implement {nameof(IRecoveryPointStore)}); use the in-memory, SQLite or PostgreSQL store.");
        }

        ThrowIfLost();
        var phases = await LoadPhasesAsync().ConfigureAwait(false);
        foreach (var phase in phases)
        {
            if (phase.Key == name)
            {
                _executor.OnPhaseSkipped(Key, name);
                return JsonSerializer.Deserialize<T>(phase.Value, jsonOptions)!;
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
        T result;
        using (var linked = cancellationToken.CanBeCanceled ? CancellationTokenSource.CreateLinkedTokenSource(CancellationToken, cancellationToken) : null)
        {
            result = await work(new IdempotentPhase(name, GetPhaseKey(name), _transaction, linked?.Token ?? CancellationToken)).ConfigureAwait(false);
        }

        var bytes = JsonSerializer.SerializeToUtf8Bytes(result, jsonOptions);
        phases.Add(new(name, bytes));
        var encoded = PhaseCodec.Encode(phases);
        if (_transactionalStore is not null)
        {
            var transaction = await GetTransactionAsync(CancellationToken.None).ConfigureAwait(false);
            ThrowIfEscaped(transaction);
            if (!await _transactionalStore.RecordPhasesAsync(transaction, Key, OwnerToken, encoded, CancellationToken.None).ConfigureAwait(false))
            {
                await LoseClaimAsync().ConfigureAwait(false);
            }

            await transaction.CommitAsync(CancellationToken.None).ConfigureAwait(false);
            await transaction.DisposeAsync().ConfigureAwait(false);
            _transaction = null;
            _transaction = await _transactionalStore.BeginTransactionAsync(_connection!, CancellationToken.None).ConfigureAwait(false);
            if (_transactionChanged is not null)
            {
                await _transactionChanged(_transaction, CancellationToken.None).ConfigureAwait(false);
            }
        }
        else if (!await _phaseStore.RecordPhasesAsync(Key, OwnerToken, encoded, CancellationToken.None).ConfigureAwait(false))
        {
            await LoseClaimAsync().ConfigureAwait(false);
        }

        _executor.OnPhaseRecorded(Key, name);
        return result;
    }

    /// <summary>
    /// Ends the joined transaction: completes the key in it (fenced) and commits. Returns <see langword="false"/> when
    /// this owner lost the key (everything rolled back). A failed commit throws; the caller rolls back and releases.
    /// </summary>
    internal async ValueTask<bool> CommitWithCompletionAsync(StoredResponse response, TimeSpan retention)
    {
        var transaction = await GetTransactionAsync(CancellationToken.None).ConfigureAwait(false);
        ThrowIfEscaped(transaction);
        if (!await _transactionalStore!.CompleteAndCommitAsync(transaction, Key, OwnerToken, response, retention, CancellationToken.None).ConfigureAwait(false))
        {
            LostClaim = true;
            await RollbackAsync().ConfigureAwait(false);
            return false;
        }

        await EndTransactionAsync().ConfigureAwait(false);
        _transactionalStore.OnCompletionCommitted(Key);
        IIdempotencyStoreDecorator.CompletedBeneath(_executor!.Store, Key, OwnerToken);
        return true;
    }

    /// <summary>Checks that the operation left the joined transaction to Idem; throws when it committed or rolled it back itself.</summary>
    internal void ThrowIfTransactionEscaped()
    {
        _transactionalStore?.ThrowIfWrittenOutside(this, null);
        if (_transaction is { } transaction)
        {
            ThrowIfEscaped(transaction);
        }
    }

    /// <summary>
    /// The store's refusal when <paramref name="failure"/>, thrown by the operation, comes from a write outside the joined
    /// transaction (or followed one); <see langword="null"/> otherwise. Asked before the rollback, while the transaction holds its locks.
    /// </summary>
    internal InvalidOperationException? OutsideWriteRefusal(Exception failure)
    {
        if (_transactionalStore is null || failure is InvalidOperationException)
        {
            return null;
        }

        try
        {
            _transactionalStore.ThrowIfWrittenOutside(this, failure);
            return null;
        }
        catch (InvalidOperationException refused)
        {
            return refused;
        }
    }

    /// <summary>Rolls back the joined transaction, if any, and closes what Idem opened. Never throws.</summary>
    internal async ValueTask RollbackAsync()
    {
        if (_transaction is { } transaction && transaction.Connection is not null)
        {
            try
            {
                await transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // A failed rollback ends the same way: the connection is closed and the database rolls back.
            catch (Exception)
#pragma warning restore CA1031
            {
                _ownsConnection = true; // closing it is then the only way to end the transaction
            }
        }

        await EndTransactionAsync().ConfigureAwait(false);
    }

    private async ValueTask EndTransactionAsync()
    {
        var transaction = _transaction;
        _transaction = null;
        if (transaction is not null)
        {
            await transaction.DisposeAsync().ConfigureAwait(false);
            if (_transactionChanged is not null)
            {
                try
                {
                    await _transactionChanged(null, CancellationToken.None).ConfigureAwait(false);
                }
#pragma warning disable CA1031 // Telling the caller's context that the transaction ended must not hide the outcome.
                catch (Exception)
#pragma warning restore CA1031
                {
                }
            }
        }

        if (_ownsConnection && _connection is { } connection)
        {
            _connection = null;
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async ValueTask<DbTransaction> BeginAsync(DbConnection? connection, Func<DbTransaction?, CancellationToken, ValueTask>? transactionChanged, CancellationToken cancellationToken)
    {
        if (_transactionalStore is null)
        {
            throw new InvalidOperationException(
                "This operation has no joined transaction: set JoinedTransaction on its idempotency policy (RequireIdempotency(o => o.JoinedTransaction = true) "
                + "or [Idempotent(JoinedTransaction = true)]) with a store on the same database as the data (SQLite, PostgreSQL).");
        }

        ThrowIfLost();
        if (_transaction is { } current)
        {
            if (connection is not null && !ReferenceEquals(connection, _connection))
            {
                throw new InvalidOperationException(
                    "The joined transaction was already begun on another connection. Under a joined transaction every write must go through one "
                    + "connection (one DbContext, or the connection of IdempotentExecution.GetTransactionAsync()); a second connection's writes would commit outside it.");
            }

            if (transactionChanged is not null && _transactionChanged is null)
            {
                _transactionChanged = transactionChanged;
                await transactionChanged(current, cancellationToken).ConfigureAwait(false);
            }

            return current;
        }

        if (connection is null)
        {
            connection = await _transactionalStore.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            _ownsConnection = true;
        }

        _connection = connection;
        _transaction = await _transactionalStore.BeginTransactionAsync(connection, cancellationToken).ConfigureAwait(false);
        _transactionChanged = transactionChanged;
        if (transactionChanged is not null)
        {
            await transactionChanged(_transaction, cancellationToken).ConfigureAwait(false);
        }

        return _transaction;
    }

    private async ValueTask<List<KeyValuePair<string, byte[]>>> LoadPhasesAsync()
    {
        if (_phases is not null)
        {
            return _phases;
        }

        if (!TookOver)
        {
            // A fresh claim starts without phases: the store drops them with a record it replaces.
            return _phases = [];
        }

        var record = await _executor!.Store.GetAsync(Key, CancellationToken.None).ConfigureAwait(false);
        if (record is null || record.OwnerToken != OwnerToken || record.State != IdempotencyRecordState.InFlight)
        {
            await LoseClaimAsync().ConfigureAwait(false);
        }

        return _phases = PhaseCodec.Decode(record!.Phases.Span);
    }

    private async ValueTask LoseClaimAsync()
    {
        LostClaim = true;
        await RollbackAsync().ConfigureAwait(false);
        _executor!.OnStaleOwnerRolledBack(Key);
        throw new IdempotencyOwnershipLostException(Key);
    }

    private void ThrowIfLost()
    {
        if (LostClaim)
        {
            throw new IdempotencyOwnershipLostException(Key);
        }
    }

    private void ThrowIfEscaped(DbTransaction transaction)
    {
        if (transaction.Connection is null || _transactionalStore!.IsCompleted(transaction))
        {
            throw new InvalidOperationException(
                "The operation committed or rolled back the joined transaction itself, or closed its connection (a DbContext disposed inside the operation "
                + "closes it: let the context live until the request ends, as a scoped one does). Under a joined transaction Idem commits the operation's "
                + "writes together with the key's completion: write through the transaction and never commit it (or turn JoinedTransaction off for this operation).");
        }
    }
}

/// <summary>What a phase is given (see <see cref="IdempotentExecution.RunPhaseAsync{T}(string, Func{IdempotentPhase, ValueTask{T}}, JsonSerializerOptions?, CancellationToken)"/>).</summary>
public sealed class IdempotentPhase
{
    internal IdempotentPhase(string name, string idempotencyKey, DbTransaction? transaction, CancellationToken cancellationToken)
    {
        Name = name;
        IdempotencyKey = idempotencyKey;
        CancellationToken = cancellationToken;
        Transaction = transaction;
    }

    /// <summary>The phase's name.</summary>
    public string Name { get; }

    /// <summary>The key to pass to the system this phase calls: the same for every owner and retry of this key and phase.</summary>
    public string IdempotencyKey { get; }

    /// <summary>The execution's token (execution timeout, lost lease).</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>The joined transaction the phase's local writes commit in, when one was begun.</summary>
    public DbTransaction? Transaction { get; }
}

/// <summary>
/// This owner of a key lost it to a newer owner (its lease ran out and another request took over): its writes in a
/// joined transaction were rolled back, and its caller is answered as a later duplicate would be. Do not catch it.
/// </summary>
public sealed class IdempotencyOwnershipLostException : Exception
{
    /// <summary>Creates the exception.</summary>
    public IdempotencyOwnershipLostException()
        : base("This owner lost its idempotency key to a newer owner; its writes were rolled back.")
    {
    }

    /// <summary>Creates the exception for <paramref name="storeKey"/>.</summary>
    public IdempotencyOwnershipLostException(string storeKey)
        : base($"This owner lost the idempotency key {storeKey} to a newer owner; its writes were rolled back.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public IdempotencyOwnershipLostException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>The encoding of recorded phases: per phase, a length-prefixed UTF-8 name and a length-prefixed result.</summary>
internal static class PhaseCodec
{
    public static byte[] Encode(List<KeyValuePair<string, byte[]>> phases)
    {
        using var stream = new MemoryStream();
        using var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        writer.Write((byte)1); // format version
        writer.Write(phases.Count);
        foreach (var phase in phases)
        {
            writer.Write(phase.Key);
            writer.Write(phase.Value.Length);
            writer.Write(phase.Value);
        }

        writer.Flush();
        return stream.ToArray();
    }

    public static List<KeyValuePair<string, byte[]>> Decode(ReadOnlySpan<byte> encoded)
    {
        var phases = new List<KeyValuePair<string, byte[]>>();
        if (encoded.IsEmpty)
        {
            return phases;
        }

        using var reader = new BinaryReader(new MemoryStream(encoded.ToArray()), Encoding.UTF8);
        if (reader.ReadByte() != 1)
        {
            throw new InvalidDataException("Unknown encoding of recorded phases.");
        }

        var count = reader.ReadInt32();
        for (var i = 0; i < count; i++)
        {
            var name = reader.ReadString();
            var length = reader.ReadInt32();
            phases.Add(new(name, reader.ReadBytes(length)));
        }

        return phases;
    }
}
