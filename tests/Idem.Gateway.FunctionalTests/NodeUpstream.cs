using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;

namespace Idem.Gateway.FunctionalTests;

/// <summary>
/// Third-party code nobody here wrote, installed from the npm registry at test time (<c>npm ci</c> against the
/// committed lockfile): an Express server behind the gateway, and an axios + axios-retry client in front of it.
/// </summary>
public sealed class NodeUpstream : IAsyncDisposable
{
    private static readonly SemaphoreSlim InstallLock = new(1, 1);
    private static bool _installed;
    private readonly Process _process;

    private NodeUpstream(Process process, Uri address)
    {
        _process = process;
        Address = address;
    }

    public Uri Address { get; }

    public static string Directory => Path.Combine(AppContext.BaseDirectory, "upstream-node");

    public static async Task EnsureInstalledAsync()
    {
        await InstallLock.WaitAsync();
        try
        {
            if (_installed)
            {
                return;
            }

            if (!File.Exists(Path.Combine(Directory, "node_modules", "express", "package.json")))
            {
                var (code, output) = await RunAsync("npm", ["ci", "--no-audit", "--no-fund", "--loglevel=error"], TimeSpan.FromMinutes(5));
                Assert.True(code == 0, $"npm ci failed ({code}): {output}");
            }

            _installed = true;
        }
        finally
        {
            InstallLock.Release();
        }
    }

    public static async Task<NodeUpstream> StartAsync()
    {
        await EnsureInstalledAsync();
        var process = new Process
        {
            StartInfo = new ProcessStartInfo("node", "server.js")
            {
                WorkingDirectory = Directory,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                RedirectStandardInput = true,
                UseShellExecute = false,
            },
        };
        var firstLine = new TaskCompletionSource<string?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var errors = new System.Text.StringBuilder();
        process.OutputDataReceived += (_, e) => firstLine.TrySetResult(e.Data);
        process.ErrorDataReceived += (_, e) =>
        {
            lock (errors)
            {
                errors.AppendLine(e.Data);
            }
        };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var line = await firstLine.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(string.IsNullOrEmpty(line), "node server.js printed no port: " + errors);
        var port = JsonDocument.Parse(line!).RootElement.GetProperty("port").GetInt32();
        return new NodeUpstream(process, new Uri($"http://127.0.0.1:{port}"));
    }

    public async Task<(int Started, int Completed, int Cancelled)> CountsAsync(string op)
    {
        using var client = new HttpClient { BaseAddress = Address };
        var counts = await client.GetFromJsonAsync<JsonElement>($"/_counts/{op}");
        return (counts.GetProperty("started").GetInt32(), counts.GetProperty("completed").GetInt32(), counts.GetProperty("cancelled").GetInt32());
    }

    /// <summary>Runs <c>client.js</c>: one POST with axios, retried by axios-retry with the same key.</summary>
    public static async Task<JsonElement> RunClientAsync(Uri url, string key, int timeoutMs, int retries)
    {
        await EnsureInstalledAsync();
        var (code, output) = await RunAsync("node", ["client.js", url.ToString(), key, timeoutMs.ToString(), retries.ToString()], TimeSpan.FromMinutes(1));
        var json = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault(l => l.StartsWith('{'));
        Assert.True(json is not null, $"client.js printed no result ({code}): {output}");
        return JsonDocument.Parse(json).RootElement;
    }

    private static async Task<(int Code, string Output)> RunAsync(string file, string[] args, TimeSpan timeout)
    {
        var info = new ProcessStartInfo(file)
        {
            WorkingDirectory = Directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish within {timeout}.");
        }

        return (process.ExitCode, await stdout + await stderr);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }
}
