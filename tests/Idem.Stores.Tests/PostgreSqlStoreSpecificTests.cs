using System.Collections.Concurrent;
using System.Diagnostics;
using Idem.PostgreSql;
using Idem.TestUtils;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace Idem.Stores.Tests;

/// <summary>What only the PostgreSQL store has: round trips, the listener, migrations, batched purge, registration.</summary>
[Collection(PostgreSqlServerGroup.Name)]
public sealed class PostgreSqlStoreSpecificTests(PostgreSqlServer server, ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly TimeSpan Day = TimeSpan.FromHours(24);
    private readonly string _schema = PostgreSqlServer.NewName("pgs");
    private readonly List<PostgreSqlIdempotencyStore> _stores = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var store in _stores)
        {
            await store.DisposeAsync();
        }

        await server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
    }

    [Fact]
    public async Task Parallel_claims_of_one_key_across_two_nodes_yield_exactly_one_owner()
    {
        var nodeA = await NewStoreAsync();
        var nodeB = await NewStoreAsync(migrate: false);
        for (var round = 0; round < 5; round++)
        {
            var key = Guid.NewGuid().ToString("N");
            var claims = Enumerable.Range(0, 256).Select(i => Task.Run(async () =>
            {
                var owner = Guid.NewGuid();
                var result = await (i % 2 == 0 ? nodeA : nodeB).TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
                return (owner, result);
            })).ToArray();

            var results = await Task.WhenAll(claims);
            var winners = results.Where(r => r.result.Status == ClaimStatus.Claimed).ToArray();
            Assert.Single(winners);
            Assert.All(
                results.Where(r => r.result.Status != ClaimStatus.Claimed),
                r =>
                {
                    Assert.Equal(ClaimStatus.InFlight, r.result.Status);
                    Assert.Equal(winners[0].owner, r.result.Record!.OwnerToken);
                });
        }

        // The READ COMMITTED case the loop exists for: claims whose INSERT waited on the winner's uncommitted row.
        output.WriteLine($"Claim statements re-run after a stale snapshot: {nodeA.StaleSnapshotRetries + nodeB.StaleSnapshotRetries}");
    }

    [Fact]
    public async Task Claim_blocked_by_an_uncommitted_claim_reports_it_once_committed()
    {
        // The READ COMMITTED case, made deterministic: the claim's snapshot is taken while another transaction's
        // insert of the key is uncommitted; its INSERT waits, then conflicts with a row its snapshot cannot see.
        var store = await NewStoreAsync();
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await using var connection = new NpgsqlConnection(server.ConnectionString);
        await connection.OpenAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await using (var insert = new NpgsqlCommand(
            $"INSERT INTO \"{_schema}\".idem_records (key, state, fingerprint, owner_token, lease_expires_at, expires_at, purge_after) " +
            "VALUES ($1, 'in_flight', 'fp', $2, now() + interval '30 seconds', now() + interval '1 day', now() + interval '1 day')",
            connection,
            transaction))
        {
            insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
            insert.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = owner });
            await insert.ExecuteNonQueryAsync();
        }

        var claim = store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None).AsTask();
        var stopwatch = Stopwatch.StartNew();
        while ((long)(await server.ExecuteAsync(
            $"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{_schema}%' AND pid <> pg_backend_pid()"))! == 0)
        {
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(10), "The claim never waited on the uncommitted row.");
            await Task.Delay(10);
        }

        Assert.False(claim.IsCompleted);
        await transaction.CommitAsync();
        var result = await claim.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(ClaimStatus.InFlight, result.Status);
        Assert.Equal(owner, result.Record!.OwnerToken);
        Assert.Equal(1, store.StaleSnapshotRetries);
    }

    [Fact]
    public async Task Each_operation_is_one_command()
    {
        var store = await NewStoreAsync();
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        using var commands = new CommandCounter(_schema);

        await store.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        Assert.Equal(1, commands.Take());
        Assert.True(await store.RenewAsync(key, owner, TimeSpan.FromSeconds(30), CancellationToken.None));
        Assert.Equal(1, commands.Take());
        Assert.True(await store.CompleteAsync(key, owner, new StoredResponse(201, null, new byte[] { 1 }), Day, CancellationToken.None));
        Assert.Equal(1, commands.Take());
        Assert.Equal(ClaimStatus.Completed, (await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None)).Status);
        Assert.Equal(1, commands.Take());
        Assert.NotNull(await store.GetAsync(key, CancellationToken.None));
        Assert.Equal(1, commands.Take());

        var other = Guid.NewGuid().ToString("N");
        await store.TryClaimAsync(new ClaimRequest(other, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        commands.Take();
        Assert.True(await store.ReleaseAsync(other, owner, CancellationToken.None));
        Assert.Equal(1, commands.Take());
    }

    [Fact]
    public async Task Responses_round_trip_byte_exact()
    {
        var store = await NewStoreAsync();
        var body = Enumerable.Range(0, 70_000).Select(i => (byte)(i * 31)).ToArray();
        KeyValuePair<string, string>[] headers =
        [
            new("Content-Type", "application/json; charset=utf-8"),
            new("Vary", "Accept"),
            new("X-Dup", "b"),
            new("Vary", "Accept-Encoding"),
            new("X-Empty", string.Empty),
            new("X-Unicode", "naïve ☃"),
        ];
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await store.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        Assert.True(await store.CompleteAsync(key, owner, new StoredResponse(207, headers, body), Day, CancellationToken.None));

        var replay = await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        Assert.Equal(ClaimStatus.Completed, replay.Status);
        Assert.Equal(207, replay.Record!.Response!.StatusCode);
        Assert.Equal(headers, replay.Record.Response.Headers);
        Assert.Equal(body, replay.Record.Response.Body.ToArray());
        Assert.False(replay.Record.Response.BodyOmitted);

        var omittedKey = Guid.NewGuid().ToString("N");
        await store.TryClaimAsync(new ClaimRequest(omittedKey, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        Assert.True(await store.CompleteAsync(omittedKey, owner, new StoredResponse(200, null, body).WithoutBody(), Day, CancellationToken.None));
        var omitted = await store.GetAsync(omittedKey, CancellationToken.None);
        Assert.True(omitted!.Response!.BodyOmitted);
        Assert.True(omitted.Response.Body.IsEmpty);
        Assert.Empty(omitted.Response.Headers);
    }

    [Fact]
    public async Task Expired_lease_is_taken_over_and_the_stale_owner_is_fenced()
    {
        var store = await NewStoreAsync();
        var key = Guid.NewGuid().ToString("N");
        var stale = Guid.NewGuid();
        var stopwatch = Stopwatch.StartNew();
        await store.TryClaimAsync(new ClaimRequest(key, "fp", stale, TimeSpan.FromSeconds(1), Day), CancellationToken.None);

        var early = await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        if (stopwatch.Elapsed < TimeSpan.FromSeconds(1))
        {
            Assert.Equal(ClaimStatus.InFlight, early.Status);
        }

        await Task.Delay(TimeSpan.FromSeconds(1.1) - stopwatch.Elapsed is { Ticks: > 0 } rest ? rest : TimeSpan.Zero);

        var mismatch = await store.TryClaimAsync(new ClaimRequest(key, "other", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        Assert.Equal(ClaimStatus.InFlight, mismatch.Status);

        var fresh = Guid.NewGuid();
        var takeover = await store.TryClaimAsync(new ClaimRequest(key, "fp", fresh, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, takeover.Status);
        Assert.True(takeover.TookOver);
        Assert.Equal(fresh, takeover.Record!.OwnerToken);

        Assert.False(await store.RenewAsync(key, stale, TimeSpan.FromSeconds(30), CancellationToken.None));
        Assert.False(await store.CompleteAsync(key, stale, new StoredResponse(200, null, new byte[] { 9 }), Day, CancellationToken.None));
        Assert.False(await store.ReleaseAsync(key, stale, CancellationToken.None));
        Assert.True(await store.CompleteAsync(key, fresh, new StoredResponse(200, null, new byte[] { 7 }), Day, CancellationToken.None));
        Assert.Equal(new byte[] { 7 }, (await store.GetAsync(key, CancellationToken.None))!.Response!.Body.ToArray());
    }

    [Fact]
    public async Task Record_past_retention_is_claimed_afresh()
    {
        var store = await NewStoreAsync();
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await store.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        await store.CompleteAsync(key, owner, new StoredResponse(200, null, new byte[] { 1 }), TimeSpan.FromMilliseconds(200), CancellationToken.None);
        await Task.Delay(300);
        Assert.Null(await store.GetAsync(key, CancellationToken.None));
        var again = await store.TryClaimAsync(new ClaimRequest(key, "new", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, again.Status);
        Assert.False(again.TookOver);
    }

    [Fact]
    public async Task Completion_on_another_node_wakes_a_waiter_through_notify()
    {
        var waiterNode = await NewStoreAsync();
        var ownerNode = await NewStoreAsync(migrate: false);
        await WaitUntilListeningAsync(waiterNode);
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await ownerNode.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);

        var stopwatch = Stopwatch.StartNew();
        var wait = waiterNode.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(30), CancellationToken.None).AsTask();
        await Task.Delay(200);
        Assert.False(wait.IsCompleted);
        await ownerNode.CompleteAsync(key, owner, new StoredResponse(200, null, new byte[] { 1 }), Day, CancellationToken.None);
        await wait.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Keys_nobody_waits_for_complete_and_release_without_notify()
    {
        var store = await NewStoreAsync();
        var channel = _schema + "_changed";
        var heard = new ConcurrentQueue<string>();
        await using var listener = new NpgsqlConnection(server.ConnectionString);
        await listener.OpenAsync();
        listener.Notification += (_, e) => heard.Enqueue(e.Payload);
        await using (var listen = new NpgsqlCommand($"LISTEN \"{channel}\"", listener))
        {
            await listen.ExecuteNonQueryAsync();
        }

        var completed = Guid.NewGuid().ToString("N");
        var released = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await store.TryClaimAsync(new ClaimRequest(completed, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        await store.TryClaimAsync(new ClaimRequest(released, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        Assert.True(await store.CompleteAsync(completed, owner, new StoredResponse(200, null, new byte[] { 1 }), Day, CancellationToken.None));
        Assert.True(await store.ReleaseAsync(released, owner, CancellationToken.None));

        // Notifications arrive in commit order: the sentinel sent last proves nothing came before it.
        await server.ExecuteAsync($"SELECT pg_notify('{channel}', 'sentinel')");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (heard.IsEmpty)
        {
            await listener.WaitAsync(timeout.Token);
        }

        Assert.Equal(["sentinel"], heard.ToArray());
    }

    [Fact]
    public async Task Listener_reconnects_after_its_connection_is_killed()
    {
        var waiterNode = await NewStoreAsync(options => options.ListenerReconnectMaxDelay = TimeSpan.FromMilliseconds(500));
        var ownerNode = await NewStoreAsync(migrate: false);
        var firstPid = await WaitUntilListeningAsync(waiterNode);
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await ownerNode.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        var wait = waiterNode.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(60), CancellationToken.None).AsTask();

        Assert.Equal(true, await server.ExecuteAsync($"SELECT pg_terminate_backend({firstPid})"));
        var deadline = Stopwatch.StartNew();
        while (waiterNode.ListenerProcessId == firstPid || waiterNode.ListenerProcessId == 0)
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(10), "The listener did not reconnect.");
            await Task.Delay(20);
        }

        Assert.False(wait.IsCompleted);
        await ownerNode.CompleteAsync(key, owner, new StoredResponse(200, null, new byte[] { 1 }), Day, CancellationToken.None);
        await wait.WaitAsync(TimeSpan.FromSeconds(3));
    }

    [Fact]
    public async Task A_wait_begun_while_the_listener_is_down_sees_a_change_committed_before_it_is_back()
    {
        // The listener stays down for a second after its connection is killed: the NOTIFY of a completion committed in
        // that second reaches no one. The conformance suite hit the same gap on a store whose listener had not started.
        var waiterNode = await NewStoreAsync(options =>
        {
            options.ListenerReconnectMinDelay = TimeSpan.FromSeconds(1);
            options.ListenerReconnectMaxDelay = TimeSpan.FromSeconds(1);
        });
        var ownerNode = await NewStoreAsync(migrate: false);
        var firstPid = await WaitUntilListeningAsync(waiterNode);
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await ownerNode.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);

        Assert.Equal(true, await server.ExecuteAsync($"SELECT pg_terminate_backend({firstPid})"));
        var deadline = Stopwatch.StartNew();
        while (waiterNode.ListenerProcessId != 0)
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(10), "The listener did not notice its connection was ended.");
            await Task.Delay(5);
        }

        var wait = waiterNode.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(60), CancellationToken.None).AsTask();
        Assert.True(await ownerNode.CompleteAsync(key, owner, new StoredResponse(200, null, new byte[] { 1 }), Day, CancellationToken.None));
        Assert.Equal(0, waiterNode.ListenerProcessId); // committed while no LISTEN was up: its NOTIFY went unheard

        // Registering and reading at once, as a wait with its listener up does, would sleep out the full minute.
        await wait.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.NotEqual(0, waiterNode.ListenerProcessId);
    }

    [Fact]
    public async Task Idle_listener_health_checks_keep_the_same_connection()
    {
        var store = await NewStoreAsync(options => options.ListenerHealthCheckInterval = TimeSpan.FromMilliseconds(30));
        var defaultInterval = await NewStoreAsync(migrate: false); // the default interval: no check within this test
        var pid = await WaitUntilListeningAsync(store);
        await WaitUntilListeningAsync(defaultInterval);
        var checks = store.ListenerHealthChecks;

        // Observe the checks themselves: a test that only slept would pass with none at all.
        var stopwatch = Stopwatch.StartNew();
        while (store.ListenerHealthChecks < checks + 5)
        {
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(10), "The idle listener ran no health checks.");
            await Task.Delay(20);
        }

        Assert.Equal(0, defaultInterval.ListenerHealthChecks);
        Assert.Equal(pid, store.ListenerProcessId);
    }

    [Fact]
    public async Task Wait_times_out_quietly_when_nothing_changes()
    {
        var store = await NewStoreAsync();
        var key = Guid.NewGuid().ToString("N");
        var owner = Guid.NewGuid();
        await store.TryClaimAsync(new ClaimRequest(key, "fp", owner, TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        var stopwatch = Stopwatch.StartNew();
        await store.WaitForChangeAsync(key, owner, TimeSpan.FromMilliseconds(300), CancellationToken.None);
        Assert.InRange(stopwatch.Elapsed, TimeSpan.FromMilliseconds(250), TimeSpan.FromSeconds(5));

        // A change made before the wait registers is seen by the wait's own read.
        Assert.True(await store.ReleaseAsync(key, owner, CancellationToken.None));
        stopwatch.Restart();
        await store.WaitForChangeAsync(key, owner, TimeSpan.FromSeconds(30), CancellationToken.None);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Concurrent_migrations_apply_the_schema_once()
    {
        var migrators = Enumerable.Range(0, 4).Select(_ => NpgsqlDataSource.Create(server.ConnectionString)).ToArray();
        try
        {
            var options = new PostgreSqlIdempotencyStoreOptions { SchemaName = _schema };
            var applied = await Task.WhenAll(migrators.Select(ds => Task.Run(() => new PostgreSqlIdempotencyMigrator(ds, options).MigrateAsync(CancellationToken.None))));
            Assert.Equal(PostgreSqlIdempotencyMigrator.LatestVersion, applied.Sum()); // each version applied once
            Assert.Equal(0, await new PostgreSqlIdempotencyMigrator(migrators[0], options).MigrateAsync(CancellationToken.None));
            Assert.Equal((long)PostgreSqlIdempotencyMigrator.LatestVersion, await server.ExecuteAsync($"SELECT count(*) FROM \"{_schema}\".idem_records_schema_version"));
            Assert.Equal(1L, await server.ExecuteAsync($"SELECT count(*) FROM pg_indexes WHERE schemaname = '{_schema}' AND indexname = 'idem_records_purge_after_idx'"));
        }
        finally
        {
            foreach (var ds in migrators)
            {
                await ds.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Schema_is_created_on_first_use_when_opted_in()
    {
        var store = await NewStoreAsync(options => options.CreateSchemaAutomatically = true, migrate: false);
        var result = await store.TryClaimAsync(new ClaimRequest("k", "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, result.Status);
    }

    [Fact]
    public async Task Concurrent_first_operations_migrate_once_when_opted_in()
    {
        var store = await NewStoreAsync(options => options.CreateSchemaAutomatically = true, migrate: false);
        var results = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => Task.Run(() =>
            store.TryClaimAsync(new ClaimRequest("k" + i, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None).AsTask())));
        Assert.All(results, r => Assert.Equal(ClaimStatus.Claimed, r.Status));
        Assert.Equal((long)PostgreSqlIdempotencyMigrator.LatestVersion, await server.ExecuteAsync($"SELECT count(*) FROM \"{_schema}\".idem_records_schema_version"));
    }

    [Fact]
    public void Synchronous_dispose_does_not_throw()
    {
        var store = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions { ConnectionString = server.ConnectionString, SchemaName = _schema });
        store.Dispose();
        store.Dispose();
    }

    [Fact]
    public async Task Shipped_script_is_plain_sql_with_psql_variables()
    {
        Assert.Equal(3, PostgreSqlIdempotencyMigrator.LatestVersion); // 2: recovery points (issue 20); 3: record metadata (issue 17)
        Assert.Contains("ADD COLUMN IF NOT EXISTS phases bytea", PostgreSqlIdempotencyMigrator.GetScript(2), StringComparison.Ordinal);
        Assert.Contains("ADD COLUMN IF NOT EXISTS principal_hash text", PostgreSqlIdempotencyMigrator.GetScript(3), StringComparison.Ordinal);
        var script = PostgreSqlIdempotencyMigrator.GetScript(1);
        Assert.Contains("CREATE TABLE IF NOT EXISTS :\"schema\".:\"table\"", script, StringComparison.Ordinal);
        Assert.Contains("(purge_after)", script, StringComparison.Ordinal);
        await Task.CompletedTask;
    }

    [Fact]
    public async Task Purge_deletes_expired_records_in_small_batches_and_keeps_live_ones()
    {
        var store = await NewStoreAsync(options => options.PurgeBatchSize = 10);
        for (var i = 0; i < 25; i++)
        {
            await store.TryClaimAsync(new ClaimRequest("old" + i, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(1)), CancellationToken.None);
        }

        for (var i = 0; i < 5; i++)
        {
            await store.TryClaimAsync(new ClaimRequest("live" + i, "fp", Guid.NewGuid(), TimeSpan.FromSeconds(30), Day), CancellationToken.None);
        }

        await Task.Delay(50);
        using var commands = new CommandCounter(_schema);
        Assert.Equal(7, await store.PurgeExpiredAsync(7, CancellationToken.None));
        Assert.Equal(1, commands.Take());
        Assert.Equal(18, await store.PurgeExpiredAsync(100, CancellationToken.None));
        Assert.Equal(2, commands.Take()); // 10, then 8: a short batch means none are left
        Assert.Equal(0, await store.PurgeExpiredAsync(100, CancellationToken.None));
        Assert.Equal(5L, await server.ExecuteAsync($"SELECT count(*) FROM \"{_schema}\".idem_records"));
    }

    [Fact]
    public async Task Registration_uses_the_core_store_slot()
    {
        var services = new ServiceCollection();
        var builder = new Builder(services);
        builder.UseInMemoryStore();
        builder.UsePostgreSqlStore(server.ConnectionString, options => options.SchemaName = _schema);
        var descriptor = Assert.Single(services, d => d.ServiceType == typeof(IIdempotencyStore));
        var store = Assert.IsType<PostgreSqlIdempotencyStore>(descriptor.ImplementationFactory!(new NoServices()));
        _stores.Add(store);

        Assert.Throws<InvalidOperationException>(() => builder.UsePostgreSqlStore(server.ConnectionString, options => options.TableName = "bad name"));
        await using var dataSource = NpgsqlDataSource.Create(server.ConnectionString);
        builder.UsePostgreSqlStore(dataSource);
        Assert.Single(services, d => d.ServiceType == typeof(IIdempotencyStore));
    }

    private async Task<PostgreSqlIdempotencyStore> NewStoreAsync(Action<PostgreSqlIdempotencyStoreOptions>? configure = null, bool migrate = true)
    {
        var options = new PostgreSqlIdempotencyStoreOptions
        {
            ConnectionString = server.ConnectionString,
            SchemaName = _schema,
            NotificationChannel = _schema + "_changed",
        };
        configure?.Invoke(options);
        var store = new PostgreSqlIdempotencyStore(options);
        _stores.Add(store);
        if (migrate)
        {
            await store.MigrateAsync(CancellationToken.None);
        }

        return store;
    }

    private static async Task<int> WaitUntilListeningAsync(PostgreSqlIdempotencyStore store)
    {
        var stopwatch = Stopwatch.StartNew();
        while (store.ListenerProcessId == 0)
        {
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(10), "The listener did not start.");
            await Task.Delay(10);
        }

        return store.ListenerProcessId;
    }

    private sealed class Builder(IServiceCollection services) : IIdempotencyBuilder
    {
        public IServiceCollection Services { get; } = services;
    }

    private sealed class NoServices : IServiceProvider
    {
        public object? GetService(Type serviceType) => null;
    }

    /// <summary>Counts Npgsql command executions (one per round trip for unbatched commands) that touch a schema.</summary>
    private sealed class CommandCounter : IDisposable
    {
        private readonly ActivityListener _listener;
        private readonly ConcurrentQueue<string> _statements = new();

        public CommandCounter(string schema)
        {
            _listener = new ActivityListener
            {
                ShouldListenTo = source => source.Name == "Npgsql",
                Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
                ActivityStopped = activity =>
                {
                    var text = activity.GetTagItem("db.query.text") as string ?? activity.GetTagItem("db.statement") as string ?? activity.DisplayName;
                    if (text.Contains(schema, StringComparison.Ordinal))
                    {
                        _statements.Enqueue(text);
                    }
                },
            };
            ActivitySource.AddActivityListener(_listener);
        }

        public int Take()
        {
            var count = 0;
            while (_statements.TryDequeue(out _))
            {
                count++;
            }

            return count;
        }

        public void Dispose() => _listener.Dispose();
    }
}
