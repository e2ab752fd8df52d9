using System.Diagnostics;
using System.Reflection;
using System.Text;
using System.Text.Json;

namespace Idem.Cli.Tests;

/// <summary>What one run of the tool did.</summary>
public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public JsonElement Json => JsonDocument.Parse(Stdout).RootElement;

    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
}

/// <summary>
/// Runs the <c>idem</c> tool. <see cref="RunAsync(string[])"/> runs it in this process through its own entry point with
/// writers of its own (a process per command costs a second or more on a loaded 2-core box, and CI time is budgeted);
/// <see cref="RunProcessAsync"/> runs it as its users do: a real process (<c>dotnet Idem.Cli.dll</c>, or the installed
/// tool's shim), stdin redirected (so it can never ask); killed by its PID if it outlives the timeout.
/// </summary>
public static class IdemCli
{
    public static readonly string Dll = Path.Combine(AppContext.BaseDirectory, "Idem.Cli.dll");

    public static async Task<CliResult> RunAsync(IEnumerable<string> args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var array = args.ToArray();
        var code = await Task.Run(() => IdemApp.RunAsync(array, new Common.CliStreams(stdout, stderr, CanPrompt: false)));
        return new CliResult(code, stdout.ToString(), stderr.ToString());
    }

    public static async Task<CliResult> RunProcessAsync(IEnumerable<string> args, string? entryPoint = null, IDictionary<string, string>? environment = null, TimeSpan? timeout = null)
    {
        var exe = entryPoint ?? Dll;
        var isDll = exe.EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
        var info = new ProcessStartInfo(isDll ? "dotnet" : exe)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetTempPath(),
        };
        if (isDll)
        {
            info.ArgumentList.Add(exe);
        }

        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment.Remove("IDEM_CONNECTION");
        info.Environment.Remove("IDEM_REDIS");
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[name] = value;
        }

        using var process = Process.Start(info)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(120));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"idem {string.Join(' ', info.ArgumentList)} did not exit in time.\n{await stdout}\n{await stderr}");
        }

        return new CliResult(process.ExitCode, await stdout, await stderr);
    }

    public static Task<CliResult> RunAsync(params string[] args) => RunAsync((IEnumerable<string>)args);

    /// <summary>The configuration these tests were built in; Idem.Cli was built in the same one.</summary>
    public static string Configuration =>
        typeof(IdemCli).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";

    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Idem.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Idem.slnx not found above the test directory.");
    }

    public static string Utf8(byte[] bytes) => Encoding.UTF8.GetString(bytes);
}
