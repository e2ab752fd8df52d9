using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Idem.Gateway.FunctionalTests;

/// <summary>
/// Idem Gateway (or the <c>idem</c> CLI) as a real OS process: <c>dotnet X.dll args</c> in a temp working directory of
/// its own, so a default <c>idem.db</c> never lands beside the tests. Collects stdout and stderr, and stops by PID:
/// SIGTERM first (the way an orchestrator stops it), a kill only when that does not end it in time.
/// </summary>
internal sealed partial class GatewayProcess : IAsyncDisposable
{
    /// <summary>The gateway's own entry point, copied beside the tests by the project reference.</summary>
    public static readonly string GatewayDll = Path.Combine(AppContext.BaseDirectory, "Idem.Gateway.dll");

    /// <summary>The <c>idem</c> tool's entry point, copied beside the tests by the project reference.</summary>
    public static readonly string CliDll = Path.Combine(AppContext.BaseDirectory, "Idem.Cli.dll");

    private readonly Process _process;
    private readonly string _workingDirectory;
    private readonly ConcurrentQueue<string> _output = new();
    private readonly ConcurrentQueue<string> _error = new();
    private readonly TaskCompletionSource<Uri> _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private HttpClient? _client;

    private GatewayProcess(Process process, string workingDirectory)
    {
        _process = process;
        _workingDirectory = workingDirectory;
    }

    public int Id => _process.Id;

    /// <summary>Where the process listens: the first address Kestrel reported (so <c>--urls http://127.0.0.1:0</c> works).</summary>
    public Uri Address => _listening.Task.IsCompletedSuccessfully ? _listening.Task.Result : throw new InvalidOperationException("The process has not reported an address yet.");

    /// <summary>A client for <see cref="Address"/>; valid after <see cref="StartAsync"/>.</summary>
    public HttpClient Client => _client ?? throw new InvalidOperationException("Start the process with StartAsync to get a client.");

    /// <summary>Lines written to stdout so far (the gateway's JSON logs).</summary>
    public IReadOnlyCollection<string> Output => _output;

    /// <summary>Lines written to stderr so far.</summary>
    public IReadOnlyCollection<string> Error => _error;

    public bool HasExited => _process.HasExited;

    /// <summary>Both streams, for assertion messages.</summary>
    public string Logs => $"stdout:\n{string.Join('\n', _output)}\nstderr:\n{string.Join('\n', _error)}";

    /// <summary>
    /// Starts <paramref name="entryPoint"/> without waiting for anything: a <c>.dll</c> runs as <c>dotnet X.dll args</c>,
    /// anything else (an installed tool's shim) as an executable.
    /// </summary>
    public static GatewayProcess Start(string entryPoint, IEnumerable<string> args)
    {
        var isDll = entryPoint.EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
        var workingDirectory = Directory.CreateTempSubdirectory("idem-gateway-").FullName;
        var info = new ProcessStartInfo(isDll ? "dotnet" : entryPoint)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true, // nothing reads the test runner's console through the child
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        if (isDll)
        {
            info.ArgumentList.Add(entryPoint);
        }

        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        var process = new Process { StartInfo = info };
        var started = new GatewayProcess(process, workingDirectory);
        process.OutputDataReceived += (_, e) => started.OnOutput(e.Data);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                started._error.Enqueue(e.Data);
            }
        };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return started;
    }

    /// <summary>
    /// Starts a gateway and returns once its <c>/healthz</c> answers 200. Without <c>--urls</c> in <paramref name="args"/>
    /// it listens on a port the OS picks (no probe-then-bind race), read from Kestrel's "Now listening on" log line.
    /// </summary>
    public static async Task<GatewayProcess> StartAsync(string entryPoint, IEnumerable<string> args, TimeSpan? timeout = null)
    {
        var all = args.ToList();
        if (!all.Contains("--urls"))
        {
            all.AddRange(["--urls", "http://127.0.0.1:0"]);
        }

        var process = Start(entryPoint, all);
        try
        {
            await process.WaitUntilHealthyAsync(timeout ?? TimeSpan.FromSeconds(30));
            return process;
        }
        catch
        {
            await process.DisposeAsync();
            throw;
        }
    }

    /// <summary>Waits for the process to exit by itself and returns its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        try
        {
            await _process.WaitForExitAsync().WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"Process {Id} did not exit within {timeout}.\n{Logs}");
        }

        _process.WaitForExit(); // flushes the redirected streams, so Output and Error are complete
        return _process.ExitCode;
    }

    /// <summary>Kills this process at once (SIGKILL, by PID): a node dying without a goodbye.</summary>
    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            _process.WaitForExit();
        }
    }

    /// <summary>Sends SIGTERM to this process, by PID.</summary>
    public async Task TerminateAsync()
    {
        using var kill = Process.Start("kill", ["-TERM", Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        await kill.WaitForExitAsync();
    }

    /// <summary>SIGTERM, then a kill when the process has not exited within <paramref name="timeout"/>. Returns the exit code.</summary>
    public async Task<int> StopAsync(TimeSpan timeout)
    {
        if (!_process.HasExited)
        {
            await TerminateAsync();
            try
            {
                await _process.WaitForExitAsync().WaitAsync(timeout);
            }
            catch (TimeoutException)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }
        }

        _process.WaitForExit();
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        _client?.Dispose();
        await StopAsync(TimeSpan.FromSeconds(10));
        _process.Dispose();
        try
        {
            Directory.Delete(_workingDirectory, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover temp directory is not worth failing a test for.
        }
    }

    private async Task WaitUntilHealthyAsync(TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        var exited = _process.WaitForExitAsync();
        var first = await Task.WhenAny(_listening.Task, exited, Task.Delay(timeout));
        if (first != _listening.Task)
        {
            throw new InvalidOperationException($"The process {(first == exited ? "exited" : "did not report a listening address")} before it was ready.\n{Logs}");
        }

        _client = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(60) };
        while (true)
        {
            try
            {
                using var health = await _client.GetAsync("/healthz");
                if (health.IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
                // Not accepting yet.
            }

            if (_process.HasExited || clock.Elapsed > timeout)
            {
                throw new InvalidOperationException($"/healthz did not answer 200 within {timeout}.\n{Logs}");
            }

            await Task.Delay(50);
        }
    }

    private void OnOutput(string? line)
    {
        if (line is null)
        {
            return;
        }

        _output.Enqueue(line);
        if (!_listening.Task.IsCompleted && ListeningOn().Match(line) is { Success: true } match)
        {
            _listening.TrySetResult(new Uri(match.Groups["url"].Value));
        }
    }

    // Kestrel's startup line, in the json, simple or systemd console format alike.
    [GeneratedRegex("""Now listening on: (?<url>https?://[^\s"]+)""")]
    private static partial Regex ListeningOn();
}
