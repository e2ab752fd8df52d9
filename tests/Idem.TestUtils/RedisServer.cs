using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Xunit;

namespace Idem.TestUtils;

/// <summary>
/// A real Redis server for tests. When the environment variable <c>IDEM_TEST_REDIS</c> holds an endpoint
/// (<c>127.0.0.1:PORT</c>), that server is used (test.sh starts one); otherwise this starts <c>redis-server</c> itself on
/// a free loopback port in a temporary directory, without persistence, and on disposal stops it by its process id and
/// deletes the directory. Give every test its own key prefix. A test that kills the server (an outage) asks for a private
/// one with <see cref="StartPrivateAsync"/>, which is always self-started whatever the environment says.
/// </summary>
public sealed class RedisServer : IAsyncLifetime
{
    /// <summary>The environment variable naming an existing server to use instead of starting one.</summary>
    public const string EnvironmentVariable = "IDEM_TEST_REDIS";

    private readonly bool _private;
    private string? _root;
    private Process? _process;

    /// <summary>A server for the whole run: the one in <see cref="EnvironmentVariable"/> when set, otherwise self-started.</summary>
    public RedisServer()
    {
    }

    private RedisServer(bool isPrivate) => _private = isPrivate;

    /// <summary>The server's endpoint, <c>127.0.0.1:PORT</c>, usable as a StackExchange.Redis configuration string.</summary>
    public string Endpoint { get; private set; } = "";

    /// <summary><see langword="true"/> when the server came from <see cref="EnvironmentVariable"/>; it cannot be stopped then.</summary>
    public bool IsExternal { get; private set; }

    /// <summary>The process id of a self-started server.</summary>
    public int ProcessId => _process?.Id ?? throw new InvalidOperationException("The server was not started by the tests.");

    /// <summary>Starts a Redis for the caller alone, which the caller may <see cref="KillAsync">kill</see> and must dispose.</summary>
    public static async Task<RedisServer> StartPrivateAsync()
    {
        var server = new RedisServer(isPrivate: true);
        try
        {
            await server.InitializeAsync();
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>A unique key prefix for one test.</summary>
    public static string NewPrefix(string name) => $"t:{name}:{Guid.NewGuid():N}:";

    /// <inheritdoc />
    public async Task InitializeAsync()
    {
        if (!_private && Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } external)
        {
            IsExternal = true;
            Endpoint = external;
            return;
        }

        _root = Path.Combine(Path.GetTempPath(), "idem-redis-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_root);
        for (var attempt = 1; ; attempt++)
        {
            var port = FreePort();
            if (await TryStartAsync(port))
            {
                Endpoint = "127.0.0.1:" + port;
                return;
            }

            if (attempt == 3)
            {
                throw new InvalidOperationException($"redis-server did not start: {await File.ReadAllTextAsync(Path.Combine(_root, "redis.log"))}");
            }
        }
    }

    /// <summary>Kills a self-started server at once (SIGKILL, by its process id): an outage without a goodbye.</summary>
    public async Task KillAsync()
    {
        if (IsExternal || _process is null)
        {
            throw new NotSupportedException($"The server from {EnvironmentVariable} is not stopped by the tests.");
        }

        if (!_process.HasExited)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
    }

    /// <summary>
    /// Freezes (<c>SIGSTOP</c>) or thaws (<c>SIGCONT</c>) a self-started server by its process id: connections stay
    /// open but nothing answers, the outage that only a deadline ends.
    /// </summary>
    public async Task SetFrozenAsync(bool frozen)
    {
        if (IsExternal || _process is null)
        {
            throw new NotSupportedException($"The server from {EnvironmentVariable} is not paused by the tests.");
        }

        using var kill = Process.Start("kill", [frozen ? "-STOP" : "-CONT", _process.Id.ToString()]);
        await kill.WaitForExitAsync();
        if (kill.ExitCode != 0)
        {
            throw new InvalidOperationException($"kill {(frozen ? "-STOP" : "-CONT")} {_process.Id} exited with {kill.ExitCode}.");
        }
    }

    /// <inheritdoc />
    public async Task DisposeAsync()
    {
        // Idempotent: a harness that replaced this server may dispose it again from a finally block.
        if (_process is { } process)
        {
            _process = null;
            if (!process.HasExited)
            {
                // SIGKILL ends a frozen process too.
                process.Kill();
                await process.WaitForExitAsync();
            }

            process.Dispose();
        }

        if (_root is { } root)
        {
            _root = null;
            Directory.Delete(root, recursive: true);
        }
    }

    private async Task<bool> TryStartAsync(int port)
    {
        var startInfo = new ProcessStartInfo("redis-server")
        {
            RedirectStandardOutput = false,
            RedirectStandardError = false,
            UseShellExecute = false,
            WorkingDirectory = _root,
        };
        foreach (var argument in new[] { "--port", port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", _root!, "--logfile", Path.Combine(_root!, "redis.log"), "--daemonize", "no" })
        {
            startInfo.ArgumentList.Add(argument);
        }

        _process = Process.Start(startInfo) ?? throw new InvalidOperationException("Could not start redis-server.");
        var started = Stopwatch.StartNew();
        while (started.Elapsed < TimeSpan.FromSeconds(10))
        {
            if (_process.HasExited)
            {
                _process.Dispose();
                _process = null;
                return false;
            }

            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync(IPAddress.Loopback, port);
                return true;
            }
            catch (SocketException)
            {
                await Task.Delay(50);
            }
        }

        throw new InvalidOperationException($"redis-server on port {port} did not accept connections within 10 s.");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
