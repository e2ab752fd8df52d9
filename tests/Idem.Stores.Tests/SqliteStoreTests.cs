using System.Diagnostics;
using Idem.Sqlite;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Idem.Stores.Tests;

public sealed class SqliteStoreTests : IdempotencyStoreConformanceTests
{
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"idem-test-{Guid.NewGuid():N}.db");
    private readonly List<SqliteIdempotencyStore> _instances = [];
    private readonly List<string> _files = [];

    // SQLite has no clock of its own worth trusting across processes: it judges time by the app's TimeProvider.
    protected override bool UsesAppClock => true;

    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) => ValueTask.FromResult<IIdempotencyStore>(Open(_path, timeProvider));

    protected override ValueTask<IIdempotencyStore> CreateSecondInstanceAsync(TimeProvider timeProvider) => ValueTask.FromResult<IIdempotencyStore>(Open(_path, timeProvider));

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        foreach (var instance in _instances)
        {
            await instance.DisposeAsync();
        }

        foreach (var file in _files.Append(_path))
        {
            foreach (var suffix in new[] { "", "-wal", "-shm", "-journal" })
            {
                File.Delete(file + suffix);
            }
        }
    }

    private SqliteIdempotencyStore Open(string path, TimeProvider timeProvider, Action<SqliteIdempotencyStoreOptions>? configure = null)
    {
        var options = new SqliteIdempotencyStoreOptions { Path = path };
        configure?.Invoke(options);
        var store = new SqliteIdempotencyStore(options, timeProvider);
        _instances.Add(store);
        return store;
    }

    private string NewPath()
    {
        var path = Path.Combine(Path.GetTempPath(), $"idem-test-{Guid.NewGuid():N}.db");
        _files.Add(path);
        return path;
    }

    private async Task<object?> ScalarAsync(string sql)
    {
        await using var connection = new SqliteConnection($"Data Source={_path};Pooling=False");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return await command.ExecuteScalarAsync();
    }

    [Fact]
    public async Task Schema_is_created_versioned_and_in_wal_mode()
    {
        await Store.TryClaimAsync(Claim(NewKey()), CancellationToken.None);

        Assert.Equal(SqliteIdempotencyStore.SchemaVersion, Convert.ToInt32(await ScalarAsync("PRAGMA user_version;")));
        Assert.Equal("wal", await ScalarAsync("PRAGMA journal_mode;"));
        Assert.Equal(1L, await ScalarAsync("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'ix_idem_records_expires_at';"));
    }

    [Fact]
    public async Task Stored_format_is_pinned()
    {
        // The on-disk format is a contract with files written by earlier releases: changing it needs a schema version.
        var key = NewKey();
        var owner = Guid.Parse("00112233-4455-6677-8899-aabbccddeeff");
        await Store.TryClaimAsync(Claim(key, owner: owner), CancellationToken.None);
        var response = new StoredResponse(201, [new("A", "b"), new("A", "c")], new byte[] { 0xFF, 0x00 }) { BodyOmitted = false };
        Assert.True(await Store.CompleteAsync(key, owner, response, TimeSpan.FromHours(1), CancellationToken.None));

        var row = (string?)await ScalarAsync(
            $"SELECT state || '|' || hex(owner) || '|' || expires_at || '|' || status_code || '|' || hex(headers) || '|' || hex(body) || '|' || body_omitted FROM idem_records WHERE key = '{key}';");

        var expiresAt = (Time.GetUtcNow() + TimeSpan.FromHours(1)).ToUnixTimeMilliseconds();
        Assert.Equal(
            $"2|{Convert.ToHexString(owner.ToByteArray())}|{expiresAt}|201|"
            + "01" + "02000000" + "01000000" + "4100" + "01000000" + "6200" + "01000000" + "4100" + "01000000" + "6300"
            + "|FF00|0",
            row);
    }

    [Fact]
    public async Task Schema_from_a_newer_release_is_refused_loudly()
    {
        var path = NewPath();
        await using (var connection = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = "PRAGMA user_version = 99;";
            await command.ExecuteNonQueryAsync();
        }

        var store = Open(path, Time);
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => store.TryClaimAsync(Claim(NewKey()), CancellationToken.None).AsTask());
        Assert.Contains("99", error.Message);
    }

    [Fact]
    public async Task Corrupt_file_surfaces_as_an_exception()
    {
        var path = NewPath();
        await File.WriteAllBytesAsync(path, Enumerable.Range(0, 8192).Select(i => (byte)(i * 7)).ToArray());
        var store = Open(path, Time);

        await Assert.ThrowsAsync<SqliteException>(() => store.TryClaimAsync(Claim(NewKey()), CancellationToken.None).AsTask());
        await Assert.ThrowsAsync<SqliteException>(() => store.GetAsync(NewKey(), CancellationToken.None).AsTask());
    }

    [Fact]
    public async Task Locked_database_surfaces_as_an_exception_after_the_busy_timeout_and_recovers()
    {
        var store = Open(_path, Time, o => o.BusyTimeout = TimeSpan.FromMilliseconds(200));
        await store.GetAsync(NewKey(), CancellationToken.None); // creates the schema

        await using (var blocker = new SqliteConnection($"Data Source={_path};Pooling=False"))
        {
            await blocker.OpenAsync();
            await using var transaction = (SqliteTransaction)await blocker.BeginTransactionAsync();
            await using (var write = blocker.CreateCommand())
            {
                write.Transaction = transaction;
                write.CommandText = "UPDATE idem_records SET state = state;"; // takes the write lock
                await write.ExecuteNonQueryAsync();
            }

            var claim = store.TryClaimAsync(Claim(NewKey()), CancellationToken.None).AsTask();
            var finished = await Task.WhenAny(claim, Task.Delay(TimeSpan.FromSeconds(20)));
            Assert.Same(claim, finished);
            var error = await Assert.ThrowsAsync<SqliteException>(() => claim);
            Assert.Equal(5, error.SqliteErrorCode); // SQLITE_BUSY
        }

        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(Claim(NewKey()), CancellationToken.None)).Status);
    }

    [Fact]
    public async Task Cancellation_interrupts_a_wait_for_the_write_lock_and_the_write_is_never_applied()
    {
        var store = Open(_path, Time, o => o.BusyTimeout = TimeSpan.FromSeconds(30));
        await store.GetAsync(NewKey(), CancellationToken.None); // creates the schema
        var key = NewKey();
        var owner = Guid.NewGuid();

        await using (var blocker = new SqliteConnection($"Data Source={_path};Pooling=False"))
        {
            await blocker.OpenAsync();
            await using var transaction = (SqliteTransaction)await blocker.BeginTransactionAsync();
            await using (var write = blocker.CreateCommand())
            {
                write.Transaction = transaction;
                write.CommandText = "UPDATE idem_records SET state = state;"; // takes the write lock
                await write.ExecuteNonQueryAsync();
            }

            using var timeout = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            var started = Stopwatch.StartNew();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => store.TryClaimAsync(Claim(key, owner: owner), timeout.Token).AsTask());
            Assert.True(started.Elapsed < TimeSpan.FromSeconds(10), $"Cancellation took {started.Elapsed}.");
        }

        // The lock is free: the writer goes on, skips the cancelled claim, and the key is still free to claim.
        var claim = await store.TryClaimAsync(Claim(key), CancellationToken.None);
        Assert.Equal(ClaimStatus.Claimed, claim.Status);
        Assert.False(claim.TookOver);
    }

    [Fact]
    public async Task Waiter_notices_a_change_made_by_another_process_within_the_poll_interval()
    {
        var key = NewKey();
        var owner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await Store.TryClaimAsync(Claim(key, owner: owner, lease: TimeSpan.FromMinutes(5)), CancellationToken.None)).Status);
        var wait = Store.WaitForChangeAsync(key, owner, TimeSpan.FromMinutes(1), CancellationToken.None).AsTask();

        // Another process completes the key: the file changes, and no in-process signal fires.
        await using (var other = new SqliteConnection($"Data Source={_path};Pooling=False"))
        {
            await other.OpenAsync();
            await using var command = other.CreateCommand();
            command.CommandText = "UPDATE idem_records SET state = 2, status_code = 200, headers = NULL, body = NULL WHERE key = $key;";
            command.Parameters.AddWithValue("$key", key);
            Assert.Equal(1, await command.ExecuteNonQueryAsync());
        }

        // Ten poll intervals (5 s of the store's clock), far short of the wait's one-minute timeout.
        var poll = new SqliteIdempotencyStoreOptions().PollInterval;
        for (var i = 0; i < 10 && !wait.IsCompleted; i++)
        {
            Time.Advance(poll);
            await Task.WhenAny(wait, Task.Delay(50));
        }

        Assert.True(wait.IsCompleted, "The wait did not notice the other process's change by polling.");
        await wait;
    }

    [Fact]
    public async Task Tables_with_different_names_on_one_file_keep_separate_keys()
    {
        var other = Open(_path, Time, o => o.TableName = "other_records");
        var key = NewKey();

        Assert.Equal(ClaimStatus.Claimed, (await Store.TryClaimAsync(Claim(key), CancellationToken.None)).Status);
        Assert.Equal(ClaimStatus.Claimed, (await other.TryClaimAsync(Claim(key), CancellationToken.None)).Status);
    }

    [Fact]
    public async Task Many_instances_racing_to_create_the_schema_all_succeed()
    {
        var path = NewPath();
        var stores = Enumerable.Range(0, 8).Select(_ => Open(path, Time)).ToArray();
        var key = NewKey();

        var results = await Task.WhenAll(stores.Select(s => Task.Run(() => s.TryClaimAsync(Claim(key), CancellationToken.None).AsTask())));

        Assert.Single(results, r => r.Status == ClaimStatus.Claimed);
    }

    [Theory]
    [InlineData(":memory:", null)]
    [InlineData(null, "Data Source=x.db;Mode=Memory")]
    [InlineData(null, null)]
    public void Options_without_a_file_are_refused(string? path, string? connectionString)
    {
        Assert.Throws<ArgumentException>(() => new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = path, ConnectionString = connectionString }));
    }

    [Theory]
    [InlineData("records; DROP TABLE x")]
    [InlineData("1records")]
    [InlineData("")]
    public void Table_names_that_are_not_plain_identifiers_are_refused(string table)
    {
        Assert.Throws<ArgumentException>(() => new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = _path, TableName = table }));
    }

    [Fact]
    public void UseSqliteStore_registers_the_store_on_the_registered_clock()
    {
        var builder = new Builder(new ServiceCollection());
        builder.UseInMemoryStore();

        builder.UseSqliteStore(_path, o => o.BusyTimeout = TimeSpan.FromSeconds(1));

        var descriptor = Assert.Single(builder.Services, d => d.ServiceType == typeof(IIdempotencyStore));
        Assert.Equal(ServiceLifetime.Singleton, descriptor.Lifetime);
        var store = Assert.IsType<SqliteIdempotencyStore>(descriptor.ImplementationFactory!(new Services(Time)));
        _instances.Add(store);
        Assert.Throws<ArgumentOutOfRangeException>(() => builder.UseSqliteStore(_path, o => o.BusyTimeout = TimeSpan.Zero));
    }

    [Fact]
    public async Task Two_processes_sharing_one_file_claim_each_key_exactly_once()
    {
        const int Keys = 20;
        const int ClaimsPerProcess = 200;
        var path = NewPath();
        var helper = HelperPath();
        var processes = new List<Process>();
        try
        {
            for (var i = 0; i < 2; i++)
            {
                var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
                {
                    RedirectStandardInput = true,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false,
                };
                foreach (var argument in new[] { helper, path, Keys.ToString(), ClaimsPerProcess.ToString() })
                {
                    start.ArgumentList.Add(argument);
                }

                processes.Add(Process.Start(start)!);
            }

            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            foreach (var process in processes)
            {
                Assert.Equal("READY", await process.StandardOutput.ReadLineAsync(deadline.Token));
            }

            // The start barrier: both processes are up before either claims (or creates the schema).
            foreach (var process in processes)
            {
                await process.StandardInput.WriteLineAsync("go");
                await process.StandardInput.FlushAsync();
            }

            var outputs = await Task.WhenAll(processes.Select(async p =>
            {
                var stdout = p.StandardOutput.ReadToEndAsync(deadline.Token);
                var stderr = p.StandardError.ReadToEndAsync(deadline.Token);
                await p.WaitForExitAsync(deadline.Token);
                return (Exit: p.ExitCode, Out: await stdout, Err: await stderr);
            }));

            foreach (var output in outputs)
            {
                Assert.True(output.Exit == 0, $"Helper exited with {output.Exit}: {output.Err}");
            }

            var lines = outputs.SelectMany(o => o.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
            var claimed = lines.Where(l => l.StartsWith("CLAIMED ", StringComparison.Ordinal)).Select(l => l["CLAIMED ".Length..]).ToArray();
            Assert.Equal(Enumerable.Range(0, Keys).Select(k => $"key-{k}").Order(), claimed.Order());

            var done = lines.Where(l => l.StartsWith("DONE ", StringComparison.Ordinal)).Select(l => l.Split(' ')).ToArray();
            Assert.Equal(2, done.Length);
            Assert.Equal(2 * ClaimsPerProcess, done.Sum(d => int.Parse(d[1]) + int.Parse(d[2])));
        }
        finally
        {
            foreach (var process in processes)
            {
                if (!process.HasExited)
                {
                    process.Kill(entireProcessTree: true);
                }

                process.Dispose();
            }
        }
    }

    private static string HelperPath()
    {
        // tests/Idem.Stores.Tests/bin/<configuration>/<tfm>/ → tests/Idem.Sqlite.ProcessHelper/bin/<configuration>/<tfm>/
        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var tfm = output.Name;
        var configuration = output.Parent!.Name;
        var tests = output.Parent.Parent!.Parent!.Parent!.FullName;
        var helper = Path.Combine(tests, "Idem.Sqlite.ProcessHelper", "bin", configuration, tfm, "Idem.Sqlite.ProcessHelper.dll");
        Assert.True(File.Exists(helper), $"The process helper was not built at {helper}.");
        return helper;
    }

    private sealed class Builder(IServiceCollection services) : IIdempotencyBuilder
    {
        public IServiceCollection Services { get; } = services;
    }

    private sealed class Services(TimeProvider time) : IServiceProvider
    {
        public object? GetService(Type serviceType) => serviceType == typeof(TimeProvider) ? time : null;
    }
}
