using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Idem.Benchmarks.Driver;

/// <summary>
/// The HTTP benchmark: a bare Kestrel endpoint against the same endpoint under Idem (and against the drivers doing the
/// stores' round trips), in one run, with wrk. Every result is a ratio to a baseline measured in the same run, because the
/// box is shared. Writes benchmarks/results.json and benchmarks/results.md and prints the latter.
/// </summary>
internal sealed class HttpBenchmark(Repository repository, HttpSettings settings, ProcessSet processes)
{
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(10) };
    private readonly string _runId = $"{DateTimeOffset.UtcNow.ToUnixTimeSeconds()}-{Environment.ProcessId}";
    private readonly Dictionary<string, HttpCase> _cases = [];
    private string _work = "";
    private string _server = "";
    private Wrk _wrkPinned = null!, _wrkFree = null!;
    private Process? _bracketServer;
    private string? _bracketUrl;
    private HttpRun _run = null!;

    public async Task RunAsync()
    {
        _work = Directory.CreateTempSubdirectory("idem-bench.").FullName;
        File.SetUnixFileMode(_work, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute); // PostgreSQL runs as its own user
        try
        {
            await RunInAsync();
        }
        finally
        {
            if (_bracketServer is not null)
            {
                await processes.StopAsync(_bracketServer);
            }

            Directory.Delete(_work, recursive: true);
        }
    }

    private async Task RunInAsync()
    {
        Console.WriteLine("== building (Release) ==");
        await repository.BuildAsync("benchmarks/Idem.Benchmarks.Server/Idem.Benchmarks.Server.csproj", Path.Combine(_work, "build.log"));
        _server = repository.Output("benchmarks/Idem.Benchmarks.Server", "Idem.Benchmarks.Server.dll");
        _wrkPinned = new Wrk(repository.Benchmarks, settings.Threads, settings.Connections, settings.Pin ? settings.WrkCpus : null);
        _wrkFree = new Wrk(repository.Benchmarks, settings.Threads, settings.Connections, null);
        var servers = new ExternalServers(repository, _work);

        _run = new HttpRun
        {
            Started = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            Commit = await repository.CommitAsync(),
            Sdk = (await Tool.RunAsync("dotnet", ["--version"])).Output.Trim(),
            Cpus = Environment.ProcessorCount,
            Pinning = settings.Pin ? $"server on CPU {settings.ServerCpus}, wrk on CPU {settings.WrkCpus} (taskset; PostgreSQL, Redis and tiered cases unpinned except their cached replays)" : "not pinned",
            Wrk = $"wrk -t{settings.Threads} -c{settings.Connections} -d{settings.Duration.TotalSeconds:0}s --latency (warm-up {settings.Warmup.TotalSeconds:0}s)",
            Runtime = settings.Describe(),
            LoadBefore = LoadAverage(),
            Bracket = $"{settings.Bracket.TotalSeconds:0}s",
            BracketTolerancePercent = settings.BracketTolerancePercent,
        };

        await StartBracketServerAsync();
        await RunCaseAsync(HttpCases.Bare(1));
        await RunAllAsync(HttpCases.InMemory);
        await RunCaseAsync(HttpCases.Bare(2));
        await RunAllAsync(HttpCases.Sqlite);

        // A local PostgreSQL starts only now and stops right after its cases: started first, its start-up work shared the
        // CPU with the first cases (bare-1 and memory-new ran 30-40 % slower per request in runs that started it before them).
        await WithPostgresAsync(servers, "pg", HttpCases.Postgres, pg => RunAllAsync(HttpCases.Postgres, pg));

        // Redis, and the tiered store (claims in a fresh PostgreSQL, replays read through Redis), started the same way.
        var redisWanted = HttpCases.Redis.Concat(HttpCases.Tiered).Any(c => settings.Wanted(c.Name));
        (string Endpoint, int Pid)? localRedis = null;
        var redis = settings.Redis == "off" ? null : settings.Redis;
        if (redis is null && settings.Redis != "off" && redisWanted)
        {
            localRedis = await servers.StartRedisAsync();
            redis = localRedis?.Endpoint;
        }

        try
        {
            await RunAllAsync(HttpCases.Redis, redis, skip: redis is null ? "no Redis (IDEM_BENCH_REDIS=off or it failed to start)" : null);
            if (redis is null)
            {
                await RunAllAsync(HttpCases.Tiered, skip: "no Redis (IDEM_BENCH_REDIS=off or it failed to start)");
            }
            else
            {
                await WithPostgresAsync(servers, "tiered", HttpCases.Tiered, pg => RunAllAsync(HttpCases.Tiered, pg, redis));
            }
        }
        finally
        {
            if (localRedis is { } started)
            {
                ExternalServers.StopRedis(started.Pid);
            }
        }

        await RunCaseAsync(HttpCases.Bare(3));
        _run.LoadAfter = LoadAverage();

        HttpReport.Judge(_run, _cases);
        var markdown = Path.Combine(repository.Benchmarks, "results.md");
        await HttpReport.WriteAsync(_run, _cases, Path.Combine(repository.Benchmarks, "results.json"), markdown);
        Console.WriteLine();
        Console.Write(await File.ReadAllTextAsync(markdown));
    }

    /// <summary>Runs <paramref name="body"/> with a PostgreSQL: IDEM_BENCH_POSTGRES, or a temporary one stopped after.</summary>
    private async Task WithPostgresAsync(ExternalServers servers, string name, IReadOnlyList<HttpCase> cases, Func<string, Task> body)
    {
        if (!cases.Any(c => settings.Wanted(c.Name)))
        {
            return;
        }

        if (settings.Postgres == "off")
        {
            await RunAllAsync(cases, skip: "no PostgreSQL (IDEM_BENCH_POSTGRES=off)");
            return;
        }

        if (settings.Postgres is { } given)
        {
            await body(given);
            return;
        }

        var started = await servers.StartPostgresAsync(name);
        if (started is not { } pg)
        {
            await RunAllAsync(cases, skip: "no PostgreSQL (it failed to start)");
            return;
        }

        try
        {
            // The store multiplexes its statements over its pool; 2 connections per core keep the server's backends busy
            // without a backend (and a context switch) per in-flight request. A given IDEM_BENCH_POSTGRES is used as is.
            await body($"{pg.Connection};Maximum Pool Size={2 * Environment.ProcessorCount}");
        }
        finally
        {
            await servers.StopPostgresAsync(pg.DataDirectory);
        }
    }

    private async Task RunAllAsync(IReadOnlyList<HttpCase> cases, string? connection = null, string? redis = null, string? skip = null)
    {
        foreach (var @case in cases)
        {
            if (!settings.Wanted(@case.Name))
            {
                continue;
            }

            _cases[@case.Name] = @case;
            if (skip is not null)
            {
                Console.WriteLine($"== {@case.Name} ==\n   skipped: {skip}");
                _run.Cases.Add(CaseResult.Skip(@case, skip));
                continue;
            }

            var caseConnection = @case.Store switch
            {
                "sqlite" => Path.Combine(_work, @case.Name + ".db"),
                "redis" or "seredis" => redis ?? connection,
                _ => connection,
            };
            await RunCaseAsync(@case, caseConnection, redis);
        }
    }

    private async Task RunCaseAsync(HttpCase @case, string? connection = null, string? redis = null, int attempt = 1)
    {
        _cases[@case.Name] = @case;
        Console.WriteLine($"== {@case.Name} (store={@case.Store}{(@case.LocalCache ? " + local replay cache" : "")}, {@case.Traffic.ToString().ToLowerInvariant()} key){(attempt > 1 ? $", attempt {attempt}" : "")} ==");
        var pinned = settings.Pin && @case.Pinned;
        var wrk = pinned ? _wrkPinned : _wrkFree;
        var port = Ports.Free();
        var url = $"http://127.0.0.1:{port}";
        var arguments = new List<string> { _server, "--store", @case.Store, "--port", port.ToString(CultureInfo.InvariantCulture) };
        if (connection is not null)
        {
            arguments.AddRange(["--connection", connection]);
        }

        if (@case.Store is "tiered" or "tiered-raw")
        {
            arguments.AddRange(["--redis", redis!]);
        }

        if (@case.LocalCache)
        {
            arguments.AddRange(["--local-cache", "true"]);
        }

        var log = Path.Combine(_work, $"{@case.Name}-{attempt}.log");
        var server = processes.Start("dotnet", arguments, log, settings.ServerEnvironment(), pinned ? settings.ServerCpus : null);
        var stopped = false;
        Task StopServerAsync()
        {
            stopped = true;
            return processes.StopAsync(server);
        }

        try
        {
            if (!await Ports.WaitReadyAsync(_http, url + "/stats", server))
            {
                await StopServerAsync();
                Console.Error.WriteLine(await File.ReadAllTextAsync(log));
                Skip(@case, "server failed to start");
                return;
            }

            string seed;
            if (@case.Traffic == Traffic.Replay)
            {
                seed = $"replay-{_runId}-{@case.Name}-{attempt}";
                using var request = new HttpRequestMessage(HttpMethod.Post, url + "/orders") { Content = Json("{\"amount\":42}") };
                request.Headers.Add("Idempotency-Key", seed);
                using var seeded = await _http.SendAsync(request);
                if ((int)seeded.StatusCode != 201)
                {
                    await StopServerAsync();
                    Skip(@case, $"seed request answered {(int)seeded.StatusCode}");
                    return;
                }
            }
            else
            {
                seed = $"{_runId}-{@case.Name}-{attempt}";
            }

            // Warm up (JIT, tiered PGO, connection pools) with the same traffic, then measure.
            await wrk.RunAsync(url, @case.Traffic == Traffic.Replay ? "replay" : "new", @case.Traffic == Traffic.Replay ? seed : seed + "-warm", settings.Warmup, latency: false);
            var extraWarmup = await SettleJitAsync(wrk, url, @case, seed);

            double? before = null, after = null;
            var bracketed = !@case.IsBare && pinned;
            if (bracketed)
            {
                // Frozen meanwhile: the case's server, just warmed up, may still be compiling or collecting on the same core.
                Signals.Send(server.Id, Signals.Stop);
                before = await BracketAsync($"{@case.Name}-before-{attempt}");
                Signals.Send(server.Id, Signals.Cont);
            }

            var statsBefore = await ServerStats.ReadAsync(_http, url);
            var cpuBefore = ProcessCpu.Microseconds(server.Id);
            var (result, output) = await wrk.RunAsync(url, @case.Traffic == Traffic.Replay ? "replay" : "new", seed, settings.Duration);
            var cpuAfter = ProcessCpu.Microseconds(server.Id);
            var statsAfter = await ServerStats.ReadAsync(_http, url);

            // First: nothing of the case (a store's background work) may run while bare is measured after it.
            await StopServerAsync();
            if (bracketed)
            {
                after = await BracketAsync($"{@case.Name}-after-{attempt}");
            }

            if (result is null)
            {
                Console.Error.WriteLine(output);
                Skip(@case, "wrk printed no result");
                return;
            }

            var requests = Math.Max(1, result.Requests);
            var measured = new CaseResult
            {
                Name = @case.Name,
                Store = @case.Store,
                Traffic = @case.Traffic.ToString().ToLowerInvariant(),
                Pinned = pinned,
                LocalCache = @case.LocalCache,
                Attempt = attempt,
                Requests = result.Requests,
                Rps = result.Rps,
                P50Ms = result.P50Ms,
                P99Ms = result.P99Ms,
                Errors = result.Errors,
                HandlerRuns = statsAfter.Executions - statsBefore.Executions,
                CpuMicrosecondsPerRequest = (double)(cpuAfter - cpuBefore) / requests,
                AllocatedBytesPerRequest = (double)(statsAfter.AllocatedBytes - statsBefore.AllocatedBytes) / requests,
                ThreadPoolItemsPerRequest = (double)(statsAfter.ThreadPoolWorkItems - statsBefore.ThreadPoolWorkItems) / requests,
                ExceptionsPerRequest = (double)(statsAfter.Exceptions - statsBefore.Exceptions) / requests,
                Collections = $"{statsAfter.Gen0 - statsBefore.Gen0}/{statsAfter.Gen1 - statsBefore.Gen1}/{statsAfter.Gen2 - statsBefore.Gen2}",
                GcPauseMs = (statsAfter.GcPauseMicroseconds - statsBefore.GcPauseMicroseconds) / 1000.0,
                JitMethods = statsAfter.JitMethods - statsBefore.JitMethods,
                ExtraWarmupSeconds = extraWarmup.TotalSeconds,
                BracketBefore = before,
                BracketAfter = after,
            };
            Console.WriteLine($"   {result.Rps:0.0} req/s, p50 {result.P50Ms} ms, p99 {result.P99Ms} ms, {result.Requests} requests, handler ran {measured.HandlerRuns} times, "
                + $"{result.Errors} errors, {measured.CpuMicrosecondsPerRequest:0.0} µs CPU and {measured.AllocatedBytesPerRequest:0} bytes allocated per request");

            // Brackets that disagree mean the box changed speed during the case, which then compares with neither of them:
            // measure it again on a fresh server (and a fresh SQLite file). Every rejected attempt is listed in results.md.
            if (before is > 0 && after is > 0 && attempt < settings.Attempts)
            {
                var apart = 200 * Math.Abs(before.Value - after.Value) / (before.Value + after.Value);
                if (apart > settings.BracketTolerancePercent)
                {
                    Console.WriteLine($"   bare brackets {before:0} / {after:0} req/s are {apart:0.0} % apart: measuring again");
                    _run.Remeasured.Add($"- {@case.Name}, attempt {attempt}: {result.Rps:0} req/s ({2 * result.Rps / (before.Value + after.Value):0.00}× its brackets) between bare runs of {before:0} and {after:0} req/s, {apart:0.0} % apart: measured again");
                    var next = @case.Store == "sqlite" ? Path.Combine(_work, $"{@case.Name}-attempt{attempt + 1}.db") : connection;
                    await RunCaseAsync(@case, next, redis, attempt + 1);
                    return;
                }
            }

            _run.Cases.Add(measured);
        }
        finally
        {
            if (!stopped)
            {
                await StopServerAsync();
            }
        }
    }

    private void Skip(HttpCase @case, string why)
    {
        Console.WriteLine($"   skipped: {why}");
        _run.Cases.Add(CaseResult.Skip(@case, why));
    }

    /// <summary>
    /// A bare server kept running for the whole run, warmed once. Each pinned case's timed run is bracketed by a short bare
    /// measurement on it, right before and right after, and the case's ratio is taken against those two: the box's slow
    /// periods last minutes, so a baseline measured seconds away tracks them where bare-1..3, minutes apart, do not.
    /// </summary>
    private async Task StartBracketServerAsync()
    {
        if (settings.Bracket <= TimeSpan.Zero)
        {
            return;
        }

        var port = Ports.Free();
        var url = $"http://127.0.0.1:{port}";
        _bracketServer = processes.Start("dotnet", [_server, "--store", "none", "--port", port.ToString(CultureInfo.InvariantCulture)], Path.Combine(_work, "bracket.log"), settings.ServerEnvironment(), settings.Pin ? settings.ServerCpus : null);
        if (await Ports.WaitReadyAsync(_http, url + "/stats", _bracketServer))
        {
            _bracketUrl = url;
            await _wrkPinned.RunAsync(url, "new", $"{_runId}-bracket-warm", settings.Warmup, latency: false);
            return;
        }

        Console.Error.WriteLine("bracketing bare server did not start; ratios use the bare mean only");
        await processes.StopAsync(_bracketServer);
        _bracketServer = null;
    }

    private async Task<double?> BracketAsync(string tag)
    {
        if (_bracketUrl is null || _bracketServer is null || _bracketServer.HasExited)
        {
            return null;
        }

        var (result, _) = await _wrkPinned.RunAsync(_bracketUrl, "new", $"{_runId}-bracket-{tag}", settings.Bracket);
        return result is { Rps: > 0 } ? result.Rps : null;
    }

    /// <summary>
    /// Keeps warming up in 5 s slices while the server still compiled more than <c>JIT_SETTLE</c> methods in the last
    /// slice, up to <c>WARMUP_MAX</c> in all. On a loaded box tiered compilation's background thread is starved: after
    /// the fixed warm-up an Idem server was still promoting ~1,300 methods to Tier 1 during its timed run against ~300
    /// for the driver baseline beside it, and that JIT work, not Idem's, was most of the CPU per request measured.
    /// </summary>
    private async Task<TimeSpan> SettleJitAsync(Wrk wrk, string url, HttpCase @case, string seed)
    {
        if (settings.JitSettleMethods <= 0)
        {
            return TimeSpan.Zero;
        }

        var slice = TimeSpan.FromSeconds(5);
        var extra = TimeSpan.Zero;
        var last = (await ServerStats.ReadAsync(_http, url)).JitMethods;
        for (var round = 0; extra + settings.Warmup < settings.WarmupMax && round < 100; round++)
        {
            await wrk.RunAsync(url, @case.Traffic == Traffic.Replay ? "replay" : "new", @case.Traffic == Traffic.Replay ? seed : $"{seed}-settle{round}", slice, latency: false);
            extra += slice;
            var now = (await ServerStats.ReadAsync(_http, url)).JitMethods;
            var compiled = now - last;
            last = now;
            if (compiled <= settings.JitSettleMethods)
            {
                break;
            }
        }

        Console.WriteLine($"   warm-up: {settings.Warmup.TotalSeconds:0} s + {extra.TotalSeconds:0} s until the JIT settled (≤ {settings.JitSettleMethods} methods per 5 s, at most {settings.WarmupMax.TotalSeconds:0} s)");
        return extra;
    }

    /// <summary>A JSON body with exactly wrk's Content-Type (no charset): the fingerprint covers it, so a seed must match the replays.</summary>
    public static ByteArrayContent Json(string body)
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        return content;
    }

    private static string LoadAverage() =>
        string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
}
