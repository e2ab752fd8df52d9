using System.Diagnostics;
using System.Net;
using Idem.TestUtils;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace Idem.PostgreSql.FunctionalTests;

/// <summary>
/// Issue 4, item 6: a real app process (Idem.PostgreSql.CrashHost) is killed with SIGKILL while its handler owns a key.
/// A retry on another node is served by exactly one new execution once the dead owner's lease runs out (seconds, not the
/// 24 h retention), and the dead owner's completion, replayed late with its token, is refused.
/// </summary>
[Collection(SharedPostgreSql.Name)]
public sealed class CrashTests(PostgreSqlServer server, ITestOutputHelper output)
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(2);

    // Taking over waits for the lease to run out, then for the next poll (capped backoff) of the waiting request.
    private static readonly TimeSpan Slack = TimeSpan.FromSeconds(3);

    [Theory]
    [InlineData(ConflictBehavior.Wait)]
    [InlineData(ConflictBehavior.Reject)]
    public async Task Killed_owner_frees_its_key_after_the_lease_and_its_late_completion_is_refused(ConflictBehavior behavior)
    {
        var schema = PostgreSqlServer.NewName("crash");
        var table = $"\"{schema}\".idem_records";
        var key = "crash-" + Guid.NewGuid().ToString("N");
        var executions = 0;
        Process? host = null;
        AppNode? survivor = null;
        try
        {
            // 1. The surviving node, in this process, over the same table (started first, so nothing slow sits between the
            //    doomed handler starting and its kill).
            survivor = await AppNode.StartAsync(server.ConnectionString, schema, "survivor", app =>
                app.MapPost("/work", async (HttpContext context) =>
                {
                    var n = Interlocked.Increment(ref executions);
                    await Task.Delay(50, context.RequestAborted);
                    return TypedResults.Created($"/work/{Guid.NewGuid()}", new { node = "survivor", execution = n });
                }).RequireIdempotency(o => { o.Lease = Lease; o.ConflictBehavior = behavior; }));

            // 2. The doomed node: a child process whose handler blocks until it is killed.
            host = StartHost(server.ConnectionString, schema);
            var lines = new LineReader(host.StandardOutput);
            var hostUrl = (await lines.WaitForAsync("listening ", TimeSpan.FromSeconds(60)))["listening ".Length..];
            using var doomedClient = new HttpClient { BaseAddress = new Uri(hostUrl), Timeout = TimeSpan.FromSeconds(60) };
            var doomedRequest = doomedClient.SendAsync(AppNode.Post("/work", key));
            await lines.WaitForAsync("started " + key, TimeSpan.FromSeconds(30));

            // The owner's row: in flight, 24 h retention, and a lease its heartbeat keeps alive past its first length.
            await Task.Delay(Lease + TimeSpan.FromMilliseconds(500));
            var (storeKey, deadOwner, leaseLive, retentionHours) = await ReadInFlightAsync(table);
            Assert.True(leaseLive, "the live owner's lease expired: its heartbeat did not renew it");
            Assert.True(retentionHours > 23, $"retention {retentionHours} h");

            // 3. SIGKILL the owner in the middle of its handler: no release, no completion, no goodbye.
            host.Kill();
            await host.WaitForExitAsync();
            var sinceKill = Stopwatch.StartNew();
            await Assert.ThrowsAnyAsync<Exception>(() => doomedRequest);
            Assert.True((await ReadInFlightAsync(table)).LeaseLive, "the lease had already expired when the retry was sent (the host did not renew it)");

            // 4. Retry with the same key on the surviving node.
            HttpResponseMessage retried;
            if (behavior == ConflictBehavior.Wait)
            {
                // It waits for the dead owner's lease, then takes the key over and executes once.
                retried = await survivor.Client.SendAsync(AppNode.Post("/work", key));
            }
            else
            {
                // Right after the kill the lease is live: 409 + Retry-After, handler not run; retried until the lease ran out.
                using (var early = await survivor.Client.SendAsync(AppNode.Post("/work", key)))
                {
                    Assert.Equal(HttpStatusCode.Conflict, early.StatusCode);
                    Assert.Equal("application/problem+json", early.Content.Headers.ContentType?.MediaType);
                    Assert.NotNull(early.Headers.RetryAfter);
                    Assert.Equal(0, Volatile.Read(ref executions));
                }

                while (true)
                {
                    retried = await survivor.Client.SendAsync(AppNode.Post("/work", key));
                    if (retried.StatusCode != HttpStatusCode.Conflict || sinceKill.Elapsed > Lease + Slack)
                    {
                        break;
                    }

                    retried.Dispose();
                    await Task.Delay(100);
                }
            }

            var recoveredAfter = sinceKill.Elapsed;
            output.WriteLine($"{behavior}: key served again {recoveredAfter.TotalSeconds:F2} s after SIGKILL (lease {Lease.TotalSeconds} s)");
            using (retried)
            {
                Assert.Equal(HttpStatusCode.Created, retried.StatusCode);
                Assert.False(retried.Headers.Contains("Idempotent-Replayed"));
            }

            Assert.Equal(1, Volatile.Read(ref executions));
            Assert.True(recoveredAfter < Lease + Slack, $"recovered after {recoveredAfter}");
            var (state, tookOver, owner, storedBody) = await ReadRecordAsync(table, storeKey);
            Assert.Equal("completed", state);
            Assert.True(tookOver, "the retry did not take over the dead owner's claim");
            Assert.NotEqual(deadOwner, owner);

            // 5. The dead owner's late completion (as if its process had only stalled) is fenced off, and so are its renewal and release.
            var stale = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions
            {
                ConnectionString = server.ConnectionString,
                SchemaName = schema,
                NotificationChannel = schema + "_changed",
            });
            await using (stale)
            {
                var lateResponse = new StoredResponse(201, [new("Content-Type", "application/json")], "{\"node\":\"dead\"}"u8.ToArray());
                Assert.False(await stale.CompleteAsync(storeKey, deadOwner, lateResponse, TimeSpan.FromHours(24), CancellationToken.None));
                Assert.False(await stale.RenewAsync(storeKey, deadOwner, Lease, CancellationToken.None));
                Assert.False(await stale.ReleaseAsync(storeKey, deadOwner, CancellationToken.None));
            }

            Assert.Equal(storedBody, (await ReadRecordAsync(table, storeKey)).Body);

            // 6. Every later retry replays the new execution's response, byte for byte.
            using var replay = await survivor.Client.SendAsync(AppNode.Post("/work", key));
            Assert.Equal(HttpStatusCode.Created, replay.StatusCode);
            Assert.Equal("true", Assert.Single(replay.Headers.GetValues("Idempotent-Replayed")));
            Assert.Equal(storedBody, await replay.Content.ReadAsByteArrayAsync());
            Assert.Equal(1, Volatile.Read(ref executions));
        }
        finally
        {
            if (host is not null)
            {
                if (!host.HasExited)
                {
                    host.Kill();
                    await host.WaitForExitAsync();
                }

                host.Dispose();
            }

            if (survivor is not null)
            {
                await survivor.DisposeAsync();
            }

            await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        }
    }

    private static Process StartHost(string connectionString, string schema)
    {
        // The host is built next to this project (same configuration and framework): .../Idem.PostgreSql.CrashHost/bin/<cfg>/<tfm>/.
        var baseDirectory = AppContext.BaseDirectory;
        var hostDll = Path.Combine(
            baseDirectory.Replace("Idem.PostgreSql.FunctionalTests", "Idem.PostgreSql.CrashHost", StringComparison.Ordinal),
            "Idem.PostgreSql.CrashHost.dll");
        Assert.True(File.Exists(hostDll), $"{hostDll} is missing; build the solution first");

        var startInfo = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        startInfo.ArgumentList.Add(hostDll);
        startInfo.ArgumentList.Add(connectionString);
        startInfo.ArgumentList.Add(schema);
        startInfo.ArgumentList.Add(Lease.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var process = Process.Start(startInfo) ?? throw new InvalidOperationException("Could not start the crash host.");
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        return process;
    }

    private async Task<(string StoreKey, Guid Owner, bool LeaseLive, double RetentionHours)> ReadInFlightAsync(string table)
    {
        await using var connection = new NpgsqlConnection(server.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            $"SELECT key, owner_token, lease_expires_at > clock_timestamp(), extract(epoch FROM expires_at - clock_timestamp()) / 3600 FROM {table} WHERE state = 'in_flight'",
            connection);
        await using var reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync(), "no in-flight record");
        var result = (reader.GetString(0), reader.GetGuid(1), reader.GetBoolean(2), (double)reader.GetDecimal(3));
        Assert.False(await reader.ReadAsync(), "more than one in-flight record");
        return result;
    }

    private async Task<(string State, bool TookOver, Guid Owner, byte[] Body)> ReadRecordAsync(string table, string storeKey)
    {
        await using var connection = new NpgsqlConnection(server.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"SELECT state, took_over, owner_token, body FROM {table} WHERE key = $1", connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = storeKey });
        await using var reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        return (reader.GetString(0), reader.GetBoolean(1), reader.GetGuid(2), reader.GetFieldValue<byte[]>(3));
    }

    /// <summary>Reads the child's stdout line by line until a line starts with a prefix.</summary>
    private sealed class LineReader(StreamReader reader)
    {
        public async Task<string> WaitForAsync(string prefix, TimeSpan timeout)
        {
            using var cts = new CancellationTokenSource(timeout);
            while (true)
            {
                var line = await reader.ReadLineAsync(cts.Token) ?? throw new InvalidOperationException($"The crash host exited before printing '{prefix}'.");
                if (line.StartsWith(prefix, StringComparison.Ordinal))
                {
                    return line.Trim();
                }
            }
        }
    }
}
