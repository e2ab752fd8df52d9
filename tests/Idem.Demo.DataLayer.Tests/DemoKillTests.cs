using System.Collections.Concurrent;
using System.Data.Common;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using Idem.TestUtils;
using Microsoft.Data.Sqlite;
using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace Idem.Demo.DataLayer.Tests;

/// <summary>
/// Issue 20, item 4, as a user would check it: the demo's own build output runs as an OS process on a SQLite file (or
/// PostgreSQL); concurrent clients create communities with slow work (<c>delayMs</c>) under idempotency keys while the
/// test SIGKILLs the demo at random moments (seeded; the seed is printed, <c>IDEM_DEMO_KILL_SEED</c> replays it) and
/// restarts it on the same files. Every unanswered key is retried until answered; then the database must hold exactly
/// one community per key with one membership and one subscription, and every answer for a key must be the same body.
/// The naive variant (<c>Demo:JoinedTransaction=false</c>: the rows commit before the slow work, the stored response
/// after it, in Idem's own store) must duplicate communities for some keys under the same kills: the test can fail.
/// </summary>
public abstract class DemoKillTests(ITestOutputHelper output)
{
    // Kills per variant; IDEM_DEMO_KILLS raises it for a soak (benchmarks/demo-kill.sh).
    private static readonly int Kills = int.TryParse(Environment.GetEnvironmentVariable("IDEM_DEMO_KILLS"), out var n) && n > 0 ? n : 6;

    private const int Clients = 4;

    /// <summary>Settings that point the demo at a fresh database, and a way to open that database.</summary>
    protected abstract Task<(string Key, string Value, Func<DbConnection> Open)> FreshDatabaseAsync(string directory);

    [Fact]
    public async Task The_demo_SIGKILLed_while_clients_create_slow_communities_leaves_one_community_per_key_and_without_the_joined_transaction_duplicates_them()
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable("IDEM_DEMO_KILL_SEED"), out var s) ? s : Random.Shared.Next();
        output.WriteLine($"seed {seed} (IDEM_DEMO_KILL_SEED={seed} replays the kill moments), {Kills} kills per variant");

        var joined = await RunAsync(joinedTransaction: true, Kills, seed);
        output.WriteLine($"joined: {joined.Keys} keys, {joined.Interrupted} requests cut off by {Kills} SIGKILLs, {joined.Retries} retries");
        Assert.True(joined.Interrupted > 0, "no request was in flight at any kill: the test proved nothing");
        foreach (var (key, rows) in joined.Rows)
        {
            Assert.True(rows.Communities == 1, $"{key}: {rows.Communities} communities");
            Assert.True(rows.Memberships == 1 && rows.Subscriptions == 1, $"{key}: {rows.Memberships} memberships, {rows.Subscriptions} subscriptions");
        }

        Assert.Equal(joined.Keys, joined.Rows.Count);
        Assert.Equal(joined.Keys, joined.Rows.Values.Sum(r => r.Communities)); // no stray community under no key

        // The naive variant under the same kind of kills: the community committed before the slow work survives the
        // kill, the claim expires, and the retry creates a second one.
        var naive = await RunAsync(joinedTransaction: false, Math.Max(3, Kills / 2), seed + 1);
        var duplicated = naive.Rows.Count(r => r.Value.Communities > 1);
        output.WriteLine($"naive: {naive.Keys} keys, {naive.Interrupted} requests cut off, {duplicated} keys with more than one community");
        Assert.True(duplicated > 0, "the naive variant duplicated nothing: the kills never hit the window it leaves open");
    }

    private sealed record KeyRows(int Communities, int Memberships, int Subscriptions);

    private sealed record RunResult(int Keys, int Interrupted, int Retries, IReadOnlyDictionary<string, KeyRows> Rows);

    private async Task<RunResult> RunAsync(bool joinedTransaction, int kills, int seed)
    {
        var directory = Directory.CreateTempSubdirectory("idem-demo-kill").FullName;
        var (settingKey, settingValue, open) = await FreshDatabaseAsync(directory);
        var environment = new Dictionary<string, string>
        {
            [settingKey.Replace(":", "__", StringComparison.Ordinal)] = settingValue,
            ["Demo__JoinedTransaction"] = joinedTransaction ? "true" : "false",
            ["Demo__Lease"] = "00:00:01", // a killed request's key is taken over a second later
        };
        await using var demo = new DemoProcess(directory, environment);
        using var http = new HttpClient { BaseAddress = demo.Address, Timeout = TimeSpan.FromSeconds(30) };
        var random = new Random(seed);
        var answers = new ConcurrentDictionary<string, ConcurrentQueue<string>>();
        var unanswered = new ConcurrentQueue<string>();
        var interrupted = 0;
        var retries = 0;
        var creating = true;
        var keyCount = 0;
        var answered = 0;
        try
        {
            var clock = Stopwatch.StartNew();
            await demo.StartAsync();
            output.WriteLine($"{(joinedTransaction ? "joined" : "naive")}: demo started in {clock.Elapsed.TotalSeconds:0.0} s");
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(120 + (20 * kills))); // bounded: a stuck run fails

            // One request per call; a request that is not answered 201 (cut off by a kill, 409 while its claim is held,
            // 503) leaves its key for a retry with the same key and body.
            async Task<bool> SendAsync(string key)
            {
                try
                {
                    using var request = new HttpRequestMessage(HttpMethod.Post, "/communities")
                    {
                        Content = JsonContent.Create(new { name = "Kill " + key, delayMs = 100 + (key.GetHashCode(StringComparison.Ordinal) & 0xff) }),
                    };
                    request.Headers.Add("Idempotency-Key", key);
                    using var response = await http.SendAsync(request, stop.Token);
                    var body = await response.Content.ReadAsStringAsync(stop.Token);
                    if (response.StatusCode == HttpStatusCode.Created)
                    {
                        answers.GetOrAdd(key, _ => new()).Enqueue(body);
                        Interlocked.Increment(ref answered);
                        return true;
                    }
                }
                catch (HttpRequestException e) when (e.HttpRequestError == HttpRequestError.ConnectionError)
                {
                    // Refused: the demo was down when it was sent.
                }
                catch (Exception e) when (e is HttpRequestException or IOException || (e is TaskCanceledException && !stop.IsCancellationRequested))
                {
                    Interlocked.Increment(ref interrupted); // sent to a live demo, cut off by the kill
                }

                return false;
            }

            var clients = Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    string key;
                    if (unanswered.TryDequeue(out var retry))
                    {
                        key = retry;
                        Interlocked.Increment(ref retries);
                    }
                    else if (Volatile.Read(ref creating))
                    {
                        key = $"k{c}-{Interlocked.Increment(ref keyCount)}-{Guid.NewGuid():N}"[..24];
                    }
                    else
                    {
                        return;
                    }

                    if (!await SendAsync(key))
                    {
                        unanswered.Enqueue(key);
                        await demo.WaitUpAsync(stop.Token); // down: come back once it is up again
                    }
                }
            })).ToArray();

            for (var i = 0; i < kills; i++)
            {
                // Kill a warm demo (it answered since its start: requests flow, some are in their slow work), at a
                // random moment within a few requests' time.
                var before = Volatile.Read(ref answered);
                for (var w = 0; w < 600 && Volatile.Read(ref answered) == before; w++)
                {
                    await Task.Delay(50, stop.Token);
                }

                await Task.Delay(random.Next(0, 600), stop.Token);
                demo.Kill();
                var killedAt = clock.Elapsed;
                await demo.StartAsync();
                output.WriteLine($"{clock.Elapsed.TotalSeconds:0.0} s: kill {i + 1} at {killedAt.TotalSeconds:0.0} s, restarted in {(clock.Elapsed - killedAt).TotalSeconds:0.0} s; {Volatile.Read(ref answered)} answers, {unanswered.Count} keys waiting");
            }

            Volatile.Write(ref creating, false);
            await Task.WhenAll(clients).WaitAsync(stop.Token); // every unanswered key retried until answered
            output.WriteLine($"{clock.Elapsed.TotalSeconds:0.0} s: every key answered");

            // Every key once more: each answer must be the first one, replayed.
            var keys = answers.Keys.ToArray();
            await Parallel.ForEachAsync(keys, new ParallelOptions { MaxDegreeOfParallelism = Clients, CancellationToken = stop.Token }, async (key, _) =>
                Assert.True(await SendAsync(key), $"{key}: the replay was not answered"));
            foreach (var key in keys)
            {
                Assert.Single(answers[key].Distinct());
            }
        }
        finally
        {
            Volatile.Write(ref creating, false);
            demo.Kill();
        }

        var rows = await CountRowsAsync(open);
        Assert.Empty(unanswered);
        Assert.Equal(keyCount, answers.Count); // every key sent was answered in the end
        Directory.Delete(directory, recursive: true);
        return new RunResult(answers.Count, interrupted, retries, rows);
    }

    private static async Task<Dictionary<string, KeyRows>> CountRowsAsync(Func<DbConnection> open)
    {
        await using var connection = open();
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = """
            SELECT c."Name",
                   (SELECT count(*) FROM memberships m WHERE m."CommunityId" = c."Id"),
                   (SELECT count(*) FROM subscriptions s WHERE s."CommunityId" = c."Id")
            FROM communities c
            """;
        var rows = new Dictionary<string, KeyRows>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            var key = reader.GetString(0)["Kill ".Length..];
            var memberships = Convert.ToInt32(reader.GetValue(1), CultureInfo.InvariantCulture);
            var subscriptions = Convert.ToInt32(reader.GetValue(2), CultureInfo.InvariantCulture);
            rows[key] = rows.TryGetValue(key, out var r)
                ? new KeyRows(r.Communities + 1, r.Memberships + memberships, r.Subscriptions + subscriptions)
                : new KeyRows(1, memberships, subscriptions);
        }

        return rows;
    }

    /// <summary>The demo's own build output as an OS process on a fixed loopback port, killed with SIGKILL and restarted.</summary>
    private sealed class DemoProcess(string directory, IReadOnlyDictionary<string, string> environment) : IAsyncDisposable
    {
        private readonly ConcurrentQueue<string> _log = new();
        private Process? _process;
        private TaskCompletionSource _up = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Uri Address { get; } = new($"http://127.0.0.1:{FreePort()}");

        public async Task StartAsync()
        {
            var tfm = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/'));
            var dll = Path.Combine(RepositoryRoot, "samples/Idem.Demo/bin", tfm.Parent!.Name, tfm.Name, "Idem.Demo.dll");
            var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
            {
                WorkingDirectory = directory,
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            };
            start.ArgumentList.Add(dll);
            start.ArgumentList.Add("--urls");
            start.ArgumentList.Add(Address.ToString().TrimEnd('/'));
            start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
            start.Environment["Logging__LogLevel__Default"] = "Warning";
            foreach (var (key, value) in environment)
            {
                start.Environment[key] = value;
            }

            _process = Process.Start(start) ?? throw new InvalidOperationException("Could not start the demo.");
            _process.OutputDataReceived += (_, e) => Keep(e.Data);
            _process.ErrorDataReceived += (_, e) => Keep(e.Data);
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();

            using var probe = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            var started = Stopwatch.StartNew();
            while (true)
            {
                try
                {
                    using var response = await probe.GetAsync(new Uri(Address, "/stats"));
                    if (response.IsSuccessStatusCode)
                    {
                        _up.TrySetResult();
                        return;
                    }
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                }

                if (_process.HasExited || started.Elapsed > TimeSpan.FromSeconds(60))
                {
                    throw new InvalidOperationException($"The demo ({dll}) did not start:\n" + string.Join('\n', _log));
                }

                await Task.Delay(100);
            }
        }

        /// <summary>SIGKILL (Process.Kill on Unix), then waits for the process to be gone.</summary>
        /// <summary>Completes once the demo answers (at once while it is up).</summary>
        public Task WaitUpAsync(CancellationToken ct) => Volatile.Read(ref _up).Task.WaitAsync(ct);

        public void Kill()
        {
            if (_up.Task.IsCompleted)
            {
                Volatile.Write(ref _up, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            }

            if (_process is { HasExited: false })
            {
                _process.Kill();
                _process.WaitForExit(TimeSpan.FromSeconds(30));
            }

            _process?.Dispose();
            _process = null;
        }

        public ValueTask DisposeAsync()
        {
            Kill();
            return ValueTask.CompletedTask;
        }

        private void Keep(string? line)
        {
            if (line is not null && _log.Count < 200)
            {
                _log.Enqueue(line);
            }
        }

        private static string RepositoryRoot
        {
            get
            {
                var dir = new DirectoryInfo(AppContext.BaseDirectory);
                while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Idem.slnx")))
                {
                    dir = dir.Parent;
                }

                return dir?.FullName ?? throw new InvalidOperationException("Idem.slnx not found above " + AppContext.BaseDirectory);
            }
        }

        private static int FreePort()
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }
    }
}

public sealed class SqliteDemoKillTests(ITestOutputHelper output) : DemoKillTests(output)
{
    protected override Task<(string Key, string Value, Func<DbConnection> Open)> FreshDatabaseAsync(string directory)
    {
        var path = Path.Combine(directory, "demo.db");
        return Task.FromResult<(string, string, Func<DbConnection>)>(("Demo:SqlitePath", path, () => new SqliteConnection($"Data Source={path};Pooling=false")));
    }
}

[Collection(SharedPostgreSql.Name)]
public sealed class PostgreSqlDemoKillTests(PostgreSqlServer server, ITestOutputHelper output) : DemoKillTests(output)
{
    protected override async Task<(string Key, string Value, Func<DbConnection> Open)> FreshDatabaseAsync(string directory)
    {
        var connection = await server.CreateDatabaseAsync();
        return ("ConnectionStrings:Demo", connection, () => new NpgsqlConnection(connection));
    }
}
