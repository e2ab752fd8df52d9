using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.Json;

// Linux only: /proc, taskset, kill(2).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace Idem.Benchmarks.Driver;

/// <summary>A bad setting or argument: exit code 2 with one line.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>Where the repository and its benchmark projects are.</summary>
internal sealed record Repository(string Root)
{
    public string Benchmarks => Path.Combine(Root, "benchmarks");

    public static Repository Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Idem.slnx")))
            {
                return new Repository(dir.FullName);
            }
        }

        throw new UsageException("Idem.slnx not found above the driver's directory: run it from its build output in the repository.");
    }

    /// <summary>Builds a project in Release; its output is then at bin/Release/net10.0 beside it.</summary>
    public async Task BuildAsync(string project, string log)
    {
        var result = await Tool.RunAsync("dotnet", ["build", Path.Combine(Root, project), "-c", "Release", "-nologo", "-v", "quiet"], Root);
        await File.AppendAllTextAsync(log, result.Output);
        if (result.ExitCode != 0)
        {
            Console.Error.WriteLine(result.Output);
            throw new UsageException($"build of {project} failed");
        }
    }

    public string Output(string projectDirectory, string assembly) =>
        Path.Combine(Root, projectDirectory, "bin", "Release", "net10.0", assembly);

    public async Task<string> CommitAsync()
    {
        var head = await Tool.RunAsync("git", ["-C", Root, "rev-parse", "--short", "HEAD"], Root);
        var dirty = await Tool.RunAsync("git", ["-C", Root, "status", "--porcelain", "--", "src", "benchmarks", ":!benchmarks/results.md", ":!benchmarks/results.json", ":!benchmarks/gateway-results.md", ":!benchmarks/gateway-results.json"], Root);
        var commit = head.ExitCode == 0 ? head.Output.Trim() : "unknown";
        return dirty.Output.Trim().Length > 0 ? commit + " (uncommitted changes)" : commit;
    }
}

/// <summary>Runs a command to completion and returns its exit code and output (stdout and stderr together).</summary>
internal static class Tool
{
    public static async Task<(int ExitCode, string Output)> RunAsync(string file, IEnumerable<string> arguments, string? directory = null, IDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = directory ?? "" };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await stdout + await stderr);
    }
}

/// <summary>POSIX signals by PID: SIGTERM to stop a server gracefully, SIGSTOP/SIGCONT to freeze one during a bracket.</summary>
internal static partial class Signals
{
    public const int Term = 15, Stop = 19, Cont = 18;

    public static void Send(int pid, int signal) => _ = kill(pid, signal);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);
}

/// <summary>A process's CPU time from /proc (utime + stime), in microseconds.</summary>
internal static class ProcessCpu
{
    private static readonly Lazy<long> TicksPerSecond = new(() =>
    {
        var result = Tool.RunAsync("getconf", ["CLK_TCK"]).GetAwaiter().GetResult();
        return long.TryParse(result.Output.Trim(), CultureInfo.InvariantCulture, out var hz) ? hz : 100;
    });

    public static long Microseconds(int pid) => FromStat(File.ReadAllText($"/proc/{pid}/stat"));

    // A /proc stat line (a process's or one of its threads'): utime + stime, in microseconds.
    private static long FromStat(string stat)
    {
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' '); // fields from the 3rd (state) on
        var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture); // utime (14th), stime (15th)
        return ticks * 1_000_000 / TicksPerSecond.Value;
    }

    /// <summary>
    /// CPU of the runtime's tiered-compilation thread (".NET Tiered Com"), which promotes hot methods to optimised code:
    /// while it is busy the process still runs code that is not yet final. 0 when the thread is not found.
    /// </summary>
    public static long TieringMicroseconds(int pid)
    {
        foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            try
            {
                if (File.ReadAllText(Path.Combine(task, "comm")).TrimEnd() != ".NET Tiered Com")
                {
                    continue;
                }

                return FromStat(File.ReadAllText(Path.Combine(task, "stat")));
            }
            catch (IOException)
            {
                // The thread ended between listing and reading.
            }
        }

        return 0;
    }
}

/// <summary>Every process the driver started, stopped by its PID when the run ends, however it ends.</summary>
internal sealed class ProcessSet : IDisposable
{
    private readonly List<Process> _running = [];

    public Process Start(string file, IEnumerable<string> arguments, string logFile, IDictionary<string, string>? environment = null, string? cpus = null)
    {
        // taskset execs the command, so the PID is the server's own: the one measured and the one stopped.
        var start = new ProcessStartInfo(cpus is null ? file : "taskset") { RedirectStandardOutput = true, RedirectStandardError = true };
        if (cpus is not null)
        {
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add(cpus);
            start.ArgumentList.Add(file);
        }

        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }

        var process = Process.Start(start)!;
        var log = new StreamWriter(logFile) { AutoFlush = true };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (log) { log.WriteLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (log) { log.WriteLine(e.Data); } } };
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => { lock (log) { log.Dispose(); } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        lock (_running)
        {
            _running.Add(process);
        }

        return process;
    }

    /// <summary>SIGTERM, then SIGKILL after 10 s; a frozen process is thawed first so that it can act on the TERM.</summary>
    public async Task StopAsync(Process process)
    {
        lock (_running)
        {
            _running.Remove(process);
        }

        if (!process.HasExited)
        {
            Signals.Send(process.Id, Signals.Term);
            Signals.Send(process.Id, Signals.Cont);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill();
                await process.WaitForExitAsync();
            }
        }

        process.Dispose();
    }

    public void StopAll()
    {
        Process[] running;
        lock (_running)
        {
            running = [.. _running];
            _running.Clear();
        }

        foreach (var process in running)
        {
            try
            {
                if (!process.HasExited)
                {
                    Signals.Send(process.Id, Signals.Cont);
                    process.Kill();
                    process.WaitForExit(10_000);
                }
            }
            catch (InvalidOperationException)
            {
                // Already gone.
            }
        }
    }

    public void Dispose() => StopAll();
}

internal static class Ports
{
    public static int Free()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Waits until <paramref name="url"/> answers (any status), the process exits, or 30 s pass.</summary>
    public static async Task<bool> WaitReadyAsync(HttpClient http, string url, Process process)
    {
        for (var i = 0; i < 300; i++)
        {
            if (process.HasExited)
            {
                return false;
            }

            try
            {
                using var response = await http.GetAsync(url);
                return true;
            }
            catch (HttpRequestException)
            {
                await Task.Delay(100);
            }
        }

        return false;
    }
}

/// <summary>What wrk measured, from the BENCH line that orders.lua's done() prints.</summary>
internal sealed record WrkResult(long Requests, double Seconds, double Rps, double P50Ms, double P90Ms, double P99Ms, double MaxMs, long Errors)
{
    public static WrkResult? Parse(string output)
    {
        var line = output.Split('\n').FirstOrDefault(l => l.StartsWith("BENCH ", StringComparison.Ordinal));
        if (line is null)
        {
            return null;
        }

        var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Select(f => f.Split('=', 2)).ToDictionary(f => f[0], f => double.Parse(f[1], CultureInfo.InvariantCulture));
        var errors = (long)(fields["err_connect"] + fields["err_read"] + fields["err_write"] + fields["err_status"] + fields["err_timeout"]);
        return new WrkResult((long)fields["requests"], fields["seconds"], fields["rps"], fields["p50_ms"], fields["p90_ms"], fields["p99_ms"], fields["max_ms"], errors);
    }
}

/// <summary>wrk with benchmarks/orders.lua, optionally pinned.</summary>
internal sealed class Wrk(string benchmarks, int threads, int connections, string? cpus)
{
    /// <summary>Runs wrk; <paramref name="body"/> replaces orders.lua's default JSON body when given.</summary>
    public async Task<(WrkResult? Result, string Output)> RunAsync(string url, string mode, string seed, TimeSpan duration, bool latency = true, string? body = null)
    {
        var arguments = new List<string>();
        var file = "wrk";
        if (cpus is not null)
        {
            arguments.AddRange(["-c", cpus, "wrk"]);
            file = "taskset";
        }

        arguments.AddRange([$"-t{threads}", $"-c{connections}", $"-d{(int)Math.Max(1, duration.TotalSeconds)}s"]);
        if (latency)
        {
            arguments.Add("--latency");
        }

        arguments.AddRange(["-s", "orders.lua", url, "--", mode, seed]);
        if (body is not null)
        {
            arguments.Add(body);
        }

        var (_, output) = await Tool.RunAsync(file, arguments, benchmarks);
        return (WrkResult.Parse(output), output);
    }
}

/// <summary>GET /stats of Idem.Benchmarks.Server: cumulative counters of the server process.</summary>
internal sealed record ServerStats(
    string Store, long Executions, long Exceptions, long AllocatedBytes, int Gen0, int Gen1, int Gen2, long GcPauseMicroseconds,
    long ThreadPoolWorkItems, long LockContentions, long CpuMicroseconds, long JitMethods, long JitMicroseconds)
{
    private static readonly JsonSerializerOptions Web = new(JsonSerializerDefaults.Web);

    public static async Task<ServerStats> ReadAsync(HttpClient http, string url) =>
        JsonSerializer.Deserialize<ServerStats>(await http.GetStringAsync(url + "/stats"), Web)!;
}

/// <summary>Throwaway PostgreSQL and Redis servers, started and stopped with eng/servers.sh (as test.sh does).</summary>
internal sealed class ExternalServers(Repository repository, string work)
{
    public async Task<(string Connection, string DataDirectory)?> StartPostgresAsync(string name)
    {
        var dir = Path.Combine(work, name);
        Directory.CreateDirectory(dir);
        var result = await Tool.RunAsync("bash", ["-c", ". eng/servers.sh && idem_start_postgres \"$1\" >&2 && printf 'CONNECTION=%s\\nDATA=%s\\n' \"$IDEM_PG_CONNECTION\" \"$IDEM_PG_DATA\"", "_", dir], repository.Root);
        var values = Values(result.Output);
        if (result.ExitCode != 0 || !values.TryGetValue("CONNECTION", out var connection))
        {
            Console.Error.WriteLine(result.Output);
            return null;
        }

        return (connection, values["DATA"]);
    }

    public Task StopPostgresAsync(string dataDirectory) =>
        Tool.RunAsync("bash", ["-c", ". eng/servers.sh && IDEM_PG_DATA=\"$1\" && idem_stop_postgres", "_", dataDirectory], repository.Root);

    public async Task<(string Endpoint, int Pid)?> StartRedisAsync()
    {
        var result = await Tool.RunAsync("bash", ["-c", ". eng/servers.sh && idem_start_redis \"$1\" >&2 && printf 'ENDPOINT=%s\\nPID=%s\\n' \"$IDEM_REDIS_ENDPOINT\" \"$IDEM_REDIS_PID\"", "_", work], repository.Root);
        var values = Values(result.Output);
        if (result.ExitCode != 0 || !values.TryGetValue("ENDPOINT", out var endpoint))
        {
            Console.Error.WriteLine(result.Output);
            return null;
        }

        return (endpoint, int.Parse(values["PID"], CultureInfo.InvariantCulture));
    }

    public static void StopRedis(int pid) => Signals.Send(pid, Signals.Term);

    private static Dictionary<string, string> Values(string output) =>
        output.Split('\n').Select(l => l.Split('=', 2)).Where(p => p.Length == 2 && p[0] is "CONNECTION" or "DATA" or "ENDPOINT" or "PID")
            .ToDictionary(p => p[0], p => p[1].Trim());
}
