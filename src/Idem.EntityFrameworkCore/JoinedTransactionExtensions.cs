using System.Data.Common;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Diagnostics;
using Microsoft.EntityFrameworkCore.Storage;

namespace Idem.EntityFrameworkCore;

/// <summary>
/// Puts a <see cref="DbContext"/>'s writes in Idem's joined transaction (<see cref="IdempotencyPolicy.JoinedTransaction"/>):
/// on the context's own connection, never a second one, so the context's writes and the key's completion commit together.
/// </summary>
public static class JoinedTransactionExtensions
{
    /// <summary>
    /// Joins <paramref name="context"/> to <paramref name="execution"/>'s joined transaction: opens the context's own
    /// connection, begins the transaction on it (or checks that it is the connection the transaction is on) and makes it
    /// the context's current transaction (<see cref="RelationalDatabaseFacadeExtensions.UseTransactionAsync(Microsoft.EntityFrameworkCore.Infrastructure.DatabaseFacade, DbTransaction, CancellationToken)"/>),
    /// kept in step when a recovery point commits it and begins the next. Call <c>SaveChangesAsync</c> as usual and never
    /// commit: Idem commits with the completion. With <see cref="AddIdempotencyJoinedTransaction(DbContextOptionsBuilder)"/> this happens by itself.
    /// The context must live until the execution ends (a scoped context in ASP.NET Core does; in a worker, create it
    /// before <c>ExecuteOnceAsync</c>): disposing it closes its connection, which ends the transaction.
    /// </summary>
    /// <param name="context">The context whose writes belong to the operation.</param>
    /// <param name="execution">The running execution (<c>HttpContext.GetIdempotentExecution()</c>, or the executor's argument).</param>
    /// <param name="cancellationToken">Cancels opening the connection and beginning the transaction.</param>
    /// <exception cref="InvalidOperationException">
    /// The context already has a transaction of its own, the joined transaction is on another connection (another
    /// context), or the context's database is not the store's.
    /// </exception>
    public static async Task JoinIdempotentTransactionAsync(this DbContext context, IdempotentExecution execution, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(execution);
        var database = context.Database;
        var own = database.CurrentTransaction?.GetDbTransaction();
        if (own is not null && ReferenceEquals(own, execution.Transaction))
        {
            return;
        }

        if (own is not null)
        {
            throw new InvalidOperationException(
                $"The {context.GetType().Name} already has a transaction of its own. Under a joined transaction Idem begins and commits the transaction: "
                + "remove the BeginTransaction/Commit calls from the operation.");
        }

        await database.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await execution.GetTransactionAsync(
            database.GetDbConnection(),
            async (transaction, ct) =>
            {
                if (transaction is null)
                {
                    await database.UseTransactionAsync(null, ct).ConfigureAwait(false);
                    await database.CloseConnectionAsync().ConfigureAwait(false);
                }
                else
                {
                    await database.UseTransactionAsync(transaction, ct).ConfigureAwait(false);
                }
            },
            cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Makes every context built with these options join the running execution's joined transaction by itself at its
    /// first <c>SaveChanges</c>, and refuses a statement that would write outside it (<c>ExecuteSqlRaw</c>,
    /// <c>ExecuteUpdate</c>, <c>ExecuteDelete</c> on a context that has not joined): at the first request, with an error
    /// that says so, rather than a write left outside the transaction. Has no effect outside joined executions.
    /// </summary>
    /// <param name="options">The context's options, for example in <c>AddDbContext(o => o.UseSqlite(...).AddIdempotencyJoinedTransaction())</c>.</param>
    /// <returns><paramref name="options"/>.</returns>
    public static DbContextOptionsBuilder AddIdempotencyJoinedTransaction(this DbContextOptionsBuilder options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.AddInterceptors(JoinOnSaveInterceptor.Instance, RefuseOutsideWritesInterceptor.Instance, RefuseCommitInterceptor.Instance);
    }

    /// <inheritdoc cref="AddIdempotencyJoinedTransaction(DbContextOptionsBuilder)"/>
    /// <typeparam name="TContext">The context type.</typeparam>
    public static DbContextOptionsBuilder<TContext> AddIdempotencyJoinedTransaction<TContext>(this DbContextOptionsBuilder<TContext> options)
        where TContext : DbContext
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.AddInterceptors(JoinOnSaveInterceptor.Instance, RefuseOutsideWritesInterceptor.Instance, RefuseCommitInterceptor.Instance);
    }

    private sealed class JoinOnSaveInterceptor : SaveChangesInterceptor
    {
        public static readonly JoinOnSaveInterceptor Instance = new();

        public override async ValueTask<InterceptionResult<int>> SavingChangesAsync(DbContextEventData eventData, InterceptionResult<int> result, CancellationToken cancellationToken = default)
        {
            if (IdempotentExecution.CurrentJoined is { } execution && eventData.Context is { } context)
            {
                await context.JoinIdempotentTransactionAsync(execution, cancellationToken).ConfigureAwait(false);
            }

            return result;
        }

        public override InterceptionResult<int> SavingChanges(DbContextEventData eventData, InterceptionResult<int> result)
        {
            if (IdempotentExecution.CurrentJoined is not null && eventData.Context is { } context
                && !ReferenceEquals(context.Database.CurrentTransaction?.GetDbTransaction(), IdempotentExecution.CurrentJoined.Transaction))
            {
                throw new InvalidOperationException(
                    "SaveChanges (synchronous) under a joined transaction: call SaveChangesAsync, or JoinIdempotentTransactionAsync first.");
            }

            return result;
        }
    }

    /// <summary>Refuses a commit or rollback of the joined transaction through the context, before it happens.</summary>
    private sealed class RefuseCommitInterceptor : DbTransactionInterceptor
    {
        public static readonly RefuseCommitInterceptor Instance = new();

        public override InterceptionResult TransactionCommitting(DbTransaction transaction, TransactionEventData eventData, InterceptionResult result)
        {
            ThrowIfJoined(transaction);
            return result;
        }

        public override ValueTask<InterceptionResult> TransactionCommittingAsync(DbTransaction transaction, TransactionEventData eventData, InterceptionResult result, CancellationToken cancellationToken = default)
        {
            ThrowIfJoined(transaction);
            return ValueTask.FromResult(result);
        }

        public override InterceptionResult TransactionRollingBack(DbTransaction transaction, TransactionEventData eventData, InterceptionResult result)
        {
            ThrowIfJoined(transaction);
            return result;
        }

        public override ValueTask<InterceptionResult> TransactionRollingBackAsync(DbTransaction transaction, TransactionEventData eventData, InterceptionResult result, CancellationToken cancellationToken = default)
        {
            ThrowIfJoined(transaction);
            return ValueTask.FromResult(result);
        }

        private static void ThrowIfJoined(DbTransaction transaction)
        {
            if (IdempotentExecution.CurrentJoined is { } execution && ReferenceEquals(transaction, execution.Transaction))
            {
                throw new InvalidOperationException(
                    "The operation committed or rolled back the joined transaction itself. Under a joined transaction Idem commits the context's writes "
                    + "together with the key's completion: call SaveChangesAsync and never commit (or turn JoinedTransaction off for this operation).");
            }
        }
    }

    private sealed class RefuseOutsideWritesInterceptor : DbCommandInterceptor
    {
        public static readonly RefuseOutsideWritesInterceptor Instance = new();

        public override InterceptionResult<int> NonQueryExecuting(DbCommand command, CommandEventData eventData, InterceptionResult<int> result)
        {
            ThrowIfOutside(command);
            return result;
        }

        public override ValueTask<InterceptionResult<int>> NonQueryExecutingAsync(DbCommand command, CommandEventData eventData, InterceptionResult<int> result, CancellationToken cancellationToken = default)
        {
            ThrowIfOutside(command);
            return ValueTask.FromResult(result);
        }

        private static void ThrowIfOutside(DbCommand command)
        {
            if (IdempotentExecution.CurrentJoined is { } execution && (execution.Transaction is null || !ReferenceEquals(command.Transaction, execution.Transaction)))
            {
                throw new InvalidOperationException(
                    "A statement would write outside the joined transaction (its DbContext has not joined it, or uses another connection). "
                    + "Call JoinIdempotentTransactionAsync(execution) on the context first, or save through SaveChangesAsync.");
            }
        }
    }
}
