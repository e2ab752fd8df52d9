using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Idem.AspNetCore.Tests;

/// <summary>
/// Issue 20, item 1: the handler's writes and the key's completion in one SQLite transaction on one file, the response
/// held until the commit, the fence, the failed commit and the misuses.
/// </summary>
public sealed class JoinedTransactionTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("idem-joined-").FullName;

    public JoinedTransactionTests()
    {
        Path = System.IO.Path.Combine(_directory, "app.db");
        using var connection = new SqliteConnection($"Data Source={Path}");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = """
            PRAGMA journal_mode = WAL;
            CREATE TABLE parents (id INTEGER PRIMARY KEY);
            INSERT INTO parents VALUES (1);
            CREATE TABLE orders (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                idem_key TEXT NOT NULL,
                parent INTEGER NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);
            """;
        command.ExecuteNonQuery();
    }

    private string Path { get; }

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task Handler_writes_and_completion_commit_together_and_replays_return_the_same_response()
    {
        var executions = 0;
        await using var app = await StartAsync(async (context, transaction) =>
        {
            Interlocked.Increment(ref executions);
            var id = await InsertOrderAsync(transaction, context.Request.Headers["Idempotency-Key"]!, parent: 1);
            return Results.Created($"/orders/{id}", new { id });
        });

        var first = await PostAsync(app, "k-1");
        var again = await PostAsync(app, "k-1");

        Assert.Equal(HttpStatusCode.Created, first.Status);
        Assert.Equal(first.Body, again.Body);
        Assert.True(again.Replayed);
        Assert.Equal(1, executions);
        Assert.Equal(1, CountOrders("k-1"));
        Assert.Equal(2, RecordState()); // completed, by the same commit as the order
    }

    [Fact]
    public async Task A_stale_owner_commits_nothing_and_is_answered_as_a_duplicate()
    {
        foreach (var joined in new[] { true, false })
        {
            var key = "stale-" + joined;
            await using var app = await StartAsync(
                async (context, transaction) =>
                {
                    // While this owner works, its lease is taken over by another owner (as after a long GC pause).
                    TakeOverRecord();
                    if (!joined)
                    {
                        // The naive variant: the business write is its own commit, before the (fenced) completion.
                        await using var own = new SqliteConnection($"Data Source={Path}");
                        await own.OpenAsync();
                        await using var tx = (SqliteTransaction)await own.BeginTransactionAsync();
                        await InsertOrderAsync(tx, key, parent: 1);
                        await tx.CommitAsync();
                    }
                    else
                    {
                        transaction = (SqliteTransaction)await context.GetIdempotentExecution().GetTransactionAsync();
                        await InsertOrderAsync(transaction, key, parent: 1);
                    }

                    return Results.Created("/orders/x", new { owner = "stale" });
                },
                joined,
                reject: true,
                beginFirst: false);

            var response = await PostAsync(app, key);
            if (joined)
            {
                // Rolled back, and answered as a later duplicate is while another owner holds the key: 409.
                Assert.Equal(HttpStatusCode.Conflict, response.Status);
                Assert.Equal(0, CountOrders(key));
            }
            else
            {
                // Without the joined transaction the stale owner's write stays, and its client got a success.
                Assert.Equal(HttpStatusCode.Created, response.Status);
                Assert.Equal(1, CountOrders(key));
            }

            await ClearRecordsAsync();
        }
    }

    [Fact]
    public async Task A_failed_commit_answers_503_sends_nothing_of_the_handler_and_releases_the_key()
    {
        var attempt = 0;
        await using var app = await StartAsync(async (context, transaction) =>
        {
            // The first attempt violates a deferred constraint: the statement succeeds, the COMMIT fails.
            var parent = Interlocked.Increment(ref attempt) == 1 ? 99 : 1;
            var id = await InsertOrderAsync(transaction, "commit", parent);

            // Even a handler that starts the response and flushes must not reach the client before the commit.
            context.Response.StatusCode = 201;
            await context.Response.StartAsync();
            await context.Response.WriteAsync("{\"handler\":\"wrote this\"}");
            await context.Response.Body.FlushAsync();
            return Results.Empty;
        });

        var failed = await PostAsync(app, "commit");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, failed.Status);
        Assert.Equal("application/problem+json", failed.ContentType);
        Assert.DoesNotContain("wrote this", failed.Body, StringComparison.Ordinal);
        Assert.Equal(0, CountOrders("commit"));

        // Released: the retry runs again and commits.
        var retried = await PostAsync(app, "commit");
        Assert.Equal(HttpStatusCode.Created, retried.Status);
        Assert.Contains("wrote this", retried.Body, StringComparison.Ordinal);
        Assert.Equal(1, CountOrders("commit"));
        Assert.Equal(2, attempt);
    }

    [Fact]
    public async Task A_handler_that_commits_the_joined_transaction_itself_is_refused_at_the_first_request()
    {
        await using var app = await StartAsync(async (context, transaction) =>
        {
            await InsertOrderAsync(transaction, "self", parent: 1);
            await transaction!.CommitAsync();
            return Results.Ok();
        });

        var response = await PostAsync(app, "self");
        Assert.Equal(HttpStatusCode.InternalServerError, response.Status);
        Assert.Null(RecordStateOrNull()); // released: nothing claims the key is done
    }

    [Fact]
    public async Task A_second_connection_to_the_joined_transaction_is_refused()
    {
        await using var app = await StartAsync(async (context, transaction) =>
        {
            await using var other = new SqliteConnection($"Data Source={Path}");
            await context.GetIdempotentExecution().GetTransactionAsync(other, null, default);
            return Results.Ok();
        });

        Assert.Equal(HttpStatusCode.InternalServerError, (await PostAsync(app, "second")).Status);
    }

    [Fact]
    public async Task A_connection_to_another_database_file_is_refused()
    {
        await using var app = await StartAsync(
            async (context, _) =>
            {
                await using var other = new SqliteConnection($"Data Source={System.IO.Path.Combine(_directory, "other.db")}");
                await context.GetIdempotentExecution().GetTransactionAsync(other, null, default);
                return Results.Ok();
            },
            beginFirst: false);

        Assert.Equal(HttpStatusCode.InternalServerError, (await PostAsync(app, "other-file")).Status);
    }

    [Fact]
    public async Task A_store_that_cannot_join_is_refused_with_a_clear_error()
    {
        var store = new InMemoryIdempotencyStore();
        var executor = new IdempotencyExecutor(store, Metrics());
        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () => await executor.ExecuteOnceAsync(
            "job", "k", "k", _ => ValueTask.FromResult(1), IdempotencyPolicy.Default with { JoinedTransaction = true }));
        Assert.Contains("cannot complete inside a database transaction", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => (IdempotencyPolicy.Default with { JoinedTransaction = true, StoreFailureMode = StoreFailureMode.FailOpen }).Validate());
    }

    [Fact]
    public async Task ExecuteOnceAsync_runs_in_a_joined_transaction()
    {
        await using var store = new Idem.Sqlite.SqliteIdempotencyStore(new Idem.Sqlite.SqliteIdempotencyStoreOptions { Path = Path });
        var executor = new IdempotencyExecutor(store, Metrics());
        var policy = IdempotencyPolicy.Default with { JoinedTransaction = true };
        var executions = 0;
        async ValueTask<long> Work(IdempotentExecution execution)
        {
            Interlocked.Increment(ref executions);
            return await InsertOrderAsync((SqliteTransaction)await execution.GetTransactionAsync(), "worker", parent: 1);
        }

        var first = await executor.ExecuteOnceAsync("import", "message-1", "message-1", Work, policy);
        var second = await executor.ExecuteOnceAsync("import", "message-1", "message-1", Work, policy);
        Assert.Equal(first, second);
        Assert.Equal(1, executions);
        Assert.Equal(1, CountOrders("worker"));
    }

    private async Task<TestApp> StartAsync(Func<HttpContext, SqliteTransaction?, Task<IResult>> handler, bool joined = true, bool reject = false, bool beginFirst = true) =>
        await TestApp.StartAsync(
            app => app.MapPost("/orders", async (HttpContext context) =>
            {
                SqliteTransaction? transaction = null;
                if (joined && beginFirst)
                {
                    transaction = (SqliteTransaction)await context.GetIdempotentExecution().GetTransactionAsync();
                }

                return await handler(context, transaction);
            }).RequireIdempotency(o =>
            {
                o.JoinedTransaction = joined;
                if (reject)
                {
                    o.ConflictBehavior = ConflictBehavior.Reject;
                }
            }),
            store: b => b.UseSqliteStore(Path));

    private static IdempotencyMetrics Metrics() =>
        new(new Microsoft.Extensions.DependencyInjection.ServiceCollection().AddMetrics().BuildServiceProvider()
            .GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>());

    private static async Task<(HttpStatusCode Status, string Body, bool Replayed, string? ContentType)> PostAsync(TestApp app, string key)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/orders") { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
        request.Headers.Add("Idempotency-Key", key);
        using var response = await app.Client.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response.Headers.Contains("Idempotent-Replayed"), response.Content.Headers.ContentType?.MediaType);
    }

    private static async Task<long> InsertOrderAsync(SqliteTransaction? transaction, string key, int parent)
    {
        using var command = transaction!.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO orders (idem_key, parent) VALUES ($key, $parent) RETURNING id";
        command.Parameters.AddWithValue("$key", key);
        command.Parameters.AddWithValue("$parent", parent);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private long Scalar(string sql)
    {
        using var connection = new SqliteConnection($"Data Source={Path};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(command.ExecuteScalar() ?? -1L, System.Globalization.CultureInfo.InvariantCulture);
    }

    private long CountOrders(string key) => Scalar($"SELECT count(*) FROM orders WHERE idem_key = '{key}'");

    private long RecordState() => Scalar("SELECT state FROM idem_records");

    private long? RecordStateOrNull()
    {
        var state = Scalar("SELECT state FROM idem_records");
        return state == -1 ? null : state;
    }

    private void TakeOverRecord() => Scalar("UPDATE idem_records SET owner = randomblob(16) WHERE state = 1");

    private Task ClearRecordsAsync()
    {
        Scalar("DELETE FROM idem_records");
        return Task.CompletedTask;
    }
}
