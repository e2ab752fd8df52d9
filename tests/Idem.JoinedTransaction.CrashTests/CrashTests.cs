using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Idem.JoinedTransaction.CrashHost;
using Idem.TestUtils;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit;
using Xunit.Abstractions;

namespace Idem.JoinedTransaction.CrashTests;

[CollectionDefinition(Name)]
public sealed class SharedPostgreSql : ICollectionFixture<PostgreSqlServer>
{
    public const string Name = "SharedPostgreSql";
}

/// <summary>
/// Issue 20, item 3: real processes (Idem.JoinedTransaction.CrashHost) SIGKILL themselves at each point of a two-phase
/// request that calls a counting foreign service, on SQLite and PostgreSQL. After each crash the key is retried until
/// answered; every key must end with exactly one order row, one foreign execution per phase, and one response that
/// every later retry replays. With the joined transaction off, the crash after the business commit must duplicate
/// the order: the test can fail.
/// </summary>
[Collection(SharedPostgreSql.Name)]
public sealed class CrashTests(PostgreSqlServer server, ITestOutputHelper output)
{
    // At least 50 per point in CI; IDEM_CRASH_REPETITIONS raises it for a soak (see benchmarks/README.md).
    private static readonly int Repetitions = int.TryParse(Environment.GetEnvironmentVariable("IDEM_CRASH_REPETITIONS"), out var n) && n > 0 ? n : 50;

    // Crash hosts started at once: start-up is CPU, and the machine has 2 cores.
    private static readonly int HostConcurrency = Math.Max(2, Environment.ProcessorCount * 2);

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgres")]
    public async Task Joined_transaction_survives_a_SIGKILL_at_every_point_with_one_order_and_one_foreign_execution_per_phase(string database)
    {
        await using var run = await CrashRun.StartAsync(database, joined: true, server);
        var keys = CrashPoints.All.SelectMany(point => Enumerable.Range(0, Repetitions).Select(i => (Point: point, Key: $"{point}-{i}-{Guid.NewGuid():N}"))).ToList();

        var crashed = await run.CrashAllAsync(keys, output);
        var responses = await run.RetryAllAsync(keys.Select(k => k.Key));

        foreach (var (point, key) in keys)
        {
            Assert.True(crashed[key], $"{point}: the host did not die at its crash point");
            var orders = await run.OrdersAsync(key);
            var order = Assert.Single(orders);
            var response = responses[key];
            Assert.Equal(order, (response.Id, response.Charge, response.Shipment));
            Assert.Equal(1, run.Foreign.Executions("charge", key));
            Assert.Equal(1, run.Foreign.Executions("ship", key));
            Assert.Equal(1, run.Foreign.DistinctKeys("charge", key)); // every attempt passed the same derived key
            Assert.Equal(1, run.Foreign.DistinctKeys("ship", key));
            if (point is CrashPoints.InShip or CrashPoints.BeforeWrite or CrashPoints.AfterWrite or CrashPoints.AfterCommit)
            {
                // The recorded phase was skipped by the retry, not called again.
                Assert.Equal(1, run.Foreign.Calls("charge", key));
            }

            if (point is CrashPoints.BeforeWrite or CrashPoints.AfterWrite or CrashPoints.AfterCommit)
            {
                Assert.Equal(1, run.Foreign.Calls("ship", key));
            }
        }

        // Every later retry replays the same response.
        var replays = await run.RetryAllAsync(keys.Take(20).Select(k => k.Key));
        foreach (var (key, replay) in replays)
        {
            Assert.Equal(responses[key], replay);
        }

        foreach (var point in CrashPoints.All)
        {
            output.WriteLine($"{database} joined, {point}: {keys.Count(k => k.Point == point)} SIGKILLs, each key one order, one execution per foreign phase");
        }
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgres")]
    public async Task Without_the_joined_transaction_a_SIGKILL_after_the_business_commit_duplicates_the_order(string database)
    {
        await using var run = await CrashRun.StartAsync(database, joined: false, server);
        var keys = Enumerable.Range(0, Math.Max(10, Repetitions / 5)).Select(i => (Point: CrashPoints.AfterCommit, Key: $"separate-{i}-{Guid.NewGuid():N}")).ToList();

        var crashed = await run.CrashAllAsync(keys, output);
        await run.RetryAllAsync(keys.Select(k => k.Key));

        var duplicated = 0;
        foreach (var (_, key) in keys)
        {
            Assert.True(crashed[key]);
            if ((await run.OrdersAsync(key)).Count > 1)
            {
                duplicated++;
            }

            // The phases were recorded by the separate store, so the foreign calls were still not repeated.
            Assert.Equal(1, run.Foreign.Executions("charge", key));
        }

        output.WriteLine($"{database} separate store, after-commit: {duplicated} of {keys.Count} keys got a second order");
        Assert.Equal(keys.Count, duplicated);
    }

    /// <summary>One database, one foreign service and the crash hosts of one test.</summary>
    private sealed class CrashRun : IAsyncDisposable
    {
        private readonly string _database;
        private readonly string _connection;
        private readonly string _schema;
        private readonly bool _joined;
        private readonly PostgreSqlServer _server;
        private readonly string? _directory;
        private readonly IIdempotencyStore _store;
        private readonly CrashWorkload _workload;

        private CrashRun(string database, string connection, string schema, bool joined, PostgreSqlServer server, string? directory, ForeignService foreign)
        {
            (_database, _connection, _schema, _joined, _server, _directory) = (database, connection, schema, joined, server, directory);
            Foreign = foreign;
            _store = CrashWorkload.CreateStore(database, connection, schema);
            _workload = new CrashWorkload(database, connection, schema, foreign.Address, joined);
        }

        public ForeignService Foreign { get; }

        public static async Task<CrashRun> StartAsync(string database, bool joined, PostgreSqlServer server)
        {
            var foreign = await ForeignService.StartAsync();
            var schema = PostgreSqlServer.NewName("crash20");
            string? directory = null;
            string connection;
            if (database == "sqlite")
            {
                directory = Directory.CreateTempSubdirectory("idem-crash20-").FullName;
                connection = Path.Combine(directory, "app.db");
            }
            else
            {
                connection = server.ConnectionString;
            }

            var run = new CrashRun(database, connection, schema, joined, server, directory, foreign);
            await run._workload.CreateSchemaAsync(run._store, schema);
            return run;
        }

        /// <summary>Starts one host per key, a few at a time; returns whether each died by SIGKILL.</summary>
        public async Task<Dictionary<string, bool>> CrashAllAsync(List<(string Point, string Key)> keys, ITestOutputHelper output)
        {
            var killed = new ConcurrentDictionary<string, bool>();
            var started = Stopwatch.StartNew();
            await Parallel.ForEachAsync(keys, new ParallelOptions { MaxDegreeOfParallelism = HostConcurrency }, async (item, ct) =>
            {
                using var host = StartHost(item.Key, item.Point);
                var stdout = host.StandardOutput.ReadToEndAsync(ct);
                var exited = host.WaitForExitAsync(ct);
                if (await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(120), ct)) != exited)
                {
                    host.Kill();
                    throw new TimeoutException($"The crash host for {item.Point} did not exit within 120 s.");
                }

                await stdout;
                killed[item.Key] = host.ExitCode == 137; // 128 + SIGKILL
            });

            output.WriteLine($"{keys.Count} crash hosts ({_database}, joined {_joined}) in {started.Elapsed.TotalSeconds:F1} s, "
                + $"{started.Elapsed.TotalMilliseconds / keys.Count:F0} ms each with {HostConcurrency} at a time");
            return new Dictionary<string, bool>(killed);
        }

        /// <summary>Retries every key in process (a surviving node) until it is answered.</summary>
        public async Task<Dictionary<string, (long Id, string Charge, string Shipment)>> RetryAllAsync(IEnumerable<string> keys)
        {
            var executor = CrashWorkload.CreateExecutor(_store);
            var answers = new ConcurrentDictionary<string, (long, string, string)>();
            // SQLite has one writer: many retries at once only queue on its lock (and past the busy timeout, fail and retry).
            await Parallel.ForEachAsync(keys, new ParallelOptions { MaxDegreeOfParallelism = _database == "sqlite" ? 4 : 16 }, async (key, ct) =>
            {
                for (var attempt = 0; ; attempt++)
                {
                    try
                    {
                        var response = await _workload.RunAsync(executor, key, static _ => { });
                        answers[key] = (response.Id, response.Charge, response.Shipment);
                        return;
                    }
                    catch (Exception) when (attempt < 20)
                    {
                        // 409 (still in flight under the dead owner's lease past the wait), 503, or a 500 such as SQLite's
                        // busy timeout under load: a client retries with the same key, and the next attempt resumes.
                        await Task.Delay(200, ct);
                    }
                }
            });

            return new Dictionary<string, (long, string, string)>(answers);
        }

        public async Task<List<(long Id, string Charge, string Shipment)>> OrdersAsync(string key)
        {
            await using var connection = await _workload.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = $"SELECT id, charge, shipment FROM {_workload.OrdersTable} WHERE idem_key = @key ORDER BY id";
            var parameter = command.CreateParameter();
            parameter.ParameterName = "key";
            parameter.Value = key;
            command.Parameters.Add(parameter);
            var rows = new List<(long, string, string)>();
            await using var reader = await command.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                rows.Add((Convert.ToInt64(reader.GetValue(0), CultureInfo.InvariantCulture), reader.GetString(1), reader.GetString(2)));
            }

            return rows;
        }

        public async ValueTask DisposeAsync()
        {
            switch (_store)
            {
                case IAsyncDisposable disposable:
                    await disposable.DisposeAsync();
                    break;
            }

            await Foreign.DisposeAsync();
            if (_directory is not null)
            {
                Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
                Directory.Delete(_directory, recursive: true);
            }
            else
            {
                await _server.ExecuteAsync($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE");
            }
        }

        private Process StartHost(string key, string point)
        {
            var hostDll = Path.Combine(
                AppContext.BaseDirectory.Replace("Idem.JoinedTransaction.CrashTests", "Idem.JoinedTransaction.CrashHost", StringComparison.Ordinal),
                "Idem.JoinedTransaction.CrashHost.dll");
            Assert.True(File.Exists(hostDll), $"{hostDll} is missing; build the solution first");
            var startInfo = new ProcessStartInfo("dotnet")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = false,
                UseShellExecute = false,
            };
            startInfo.Environment["DOTNET_TieredPGO"] = "0";
            startInfo.Environment["DOTNET_TC_QuickJitForLoops"] = "1";
            foreach (var argument in new[] { hostDll, _database, _connection, _schema, Foreign.Address.ToString(), _joined ? "1" : "0", key, point })
            {
                startInfo.ArgumentList.Add(argument);
            }

            return Process.Start(startInfo) ?? throw new InvalidOperationException("Could not start the crash host.");
        }
    }

    /// <summary>
    /// The foreign system the phases call (a payment provider, a carrier): deduplicates by the Idempotency-Key it is
    /// given, as Stripe does, and counts calls and real executions per phase and order.
    /// </summary>
    private sealed class ForeignService : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly ConcurrentDictionary<string, string> _results = new();
        private readonly ConcurrentDictionary<(string Phase, string Order), int> _calls = new();
        private readonly ConcurrentDictionary<(string Phase, string Order), int> _executions = new();
        private readonly ConcurrentDictionary<(string Phase, string Order), ConcurrentDictionary<string, byte>> _keys = new();
        private int _sequence;

        private ForeignService(WebApplication app) => _app = app;

        public Uri Address { get; private set; } = null!;

        public static async Task<ForeignService> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
            builder.Logging.ClearProviders();
            var app = builder.Build();
            var service = new ForeignService(app);
            app.MapPost("/{phase}", (string phase, string order, HttpRequest request) =>
            {
                var key = request.Headers["Idempotency-Key"].ToString();
                service._calls.AddOrUpdate((phase, order), 1, (_, v) => v + 1);
                service._keys.GetOrAdd((phase, order), _ => new()).TryAdd(key, 0);
                var result = service._results.GetOrAdd(key, _ =>
                {
                    service._executions.AddOrUpdate((phase, order), 1, (_, v) => v + 1);
                    return $"{phase}_{Interlocked.Increment(ref service._sequence)}";
                });
                return Results.Json(result);
            });
            await app.StartAsync();
            service.Address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
            return service;
        }

        public int Calls(string phase, string order) => _calls.GetValueOrDefault((phase, order));

        public int Executions(string phase, string order) => _executions.GetValueOrDefault((phase, order));

        public int DistinctKeys(string phase, string order) => _keys.TryGetValue((phase, order), out var keys) ? keys.Count : 0;

        public async ValueTask DisposeAsync() => await _app.DisposeAsync();
    }
}
