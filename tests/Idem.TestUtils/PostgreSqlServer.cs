using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;
using Xunit;

namespace Idem.TestUtils;

/// <summary>
/// A real PostgreSQL server for tests. When the environment variable <c>IDEM_TEST_POSTGRES</c> holds a connection string,
/// that server is used (CI starts one); otherwise this starts PostgreSQL 15 itself: <c>initdb</c> as the <c>postgres</c>
/// user in a temporary directory, a free loopback port, and on disposal stops it and deletes the directory.
/// Use it as an xunit collection fixture (one server per test run); give every test its own schema or database.
/// A test that stops and starts the server (an outage) must not touch that shared one: it asks for a private server with
/// <see cref="StartPrivateAsync"/>, which is always self-started whatever the environment says.
/// </summary>
public sealed class PostgreSqlServer : IAsyncLifetime
{
    /// <summary>The environment variable naming an existing server to use instead of starting one.</summary>
    public const string EnvironmentVariable = "IDEM_TEST_POSTGRES";

    private const string DefaultBinDirectory = "/usr/lib/postgresql/15/bin";

    private readonly bool _private;
    private string? _root;
    private string? _connectionString;

    /// <summary>A server for the whole run: the one in <see cref="EnvironmentVariable"/> when set, otherwise self-started.</summary>
    public PostgreSqlServer()
    {
    }

    private PostgreSqlServer(bool isPrivate) => _private = isPrivate;

    /// <summary>
    /// Starts a PostgreSQL for the caller alone (never the shared one from <see cref="EnvironmentVariable"/>), which the
    /// caller may <see cref="StopAsync">stop</see> and <see cref="StartAsync">start</see> again on the same port, and must dispose.
    /// </summary>
    public static async Task<PostgreSqlServer> StartPrivateAsync()
    {
        var server = new PostgreSqlServer(isPrivate: true);
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

    /// <summary>The connection string of the server's test database (a superuser on a self-started server).</summary>
    public string ConnectionString => _connectionString ?? throw new InvalidOperationException("The server is not initialized.");

    /// <summary><see langword="true"/> when the server came from <see cref="EnvironmentVariable"/>; it cannot be stopped then.</summary>
    public bool IsExternal { get; private set; }

    /// <summary>The TCP port of a self-started server.</summary>
    public int Port { get; private set; }

    /// <summary><see langword="true"/> while a self-started server is running.</summary>
    public bool IsRunning { get; private set; }

    private string DataDirectory => Path.Combine(_root!, "data");

    private string SocketDirectory => Path.Combine(_root!, "sock");

    /// <inheritdoc />
    public async Task InitializeAsync()
    {
        if (!_private && Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } external)
        {
            IsExternal = true;
            _connectionString = external;
            return;
        }

        _root = Path.Combine(Path.GetTempPath(), "idem-pg-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(SocketDirectory);
        if (IsRoot)
        {
            await RunAsync("chown", ["-R", "postgres:postgres", _root]);
        }

        await RunPostgresToolAsync("initdb", ["-D", DataDirectory, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"]);
        for (var attempt = 1; ; attempt++)
        {
            Port = FreePort();
            try
            {
                await StartAsync();
                break;
            }
            catch (InvalidOperationException) when (attempt < 3)
            {
                // The free port was taken between probing and binding; try another.
            }
        }

        _connectionString = new NpgsqlConnectionStringBuilder
        {
            Host = "127.0.0.1",
            Port = Port,
            Username = "postgres",
            Database = "postgres",
            MaxPoolSize = 100,
            Timeout = 5,
        }.ConnectionString;
    }

    /// <summary>
    /// The process ids of a self-started server: the postmaster (from <c>postmaster.pid</c>) and its children (the
    /// backends), for a test that freezes the whole server with SIGSTOP; empty while it is stopped.
    /// </summary>
    public IReadOnlyList<int> ServerProcessIds()
    {
        ThrowIfExternal();
        var pidFile = Path.Combine(DataDirectory, "postmaster.pid");
        if (!File.Exists(pidFile) || !int.TryParse(File.ReadLines(pidFile).First(), out var postmaster))
        {
            return [];
        }

        var ids = new List<int> { postmaster };
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out var pid))
            {
                try
                {
                    var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                    var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                    if (int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture) == postmaster)
                    {
                        ids.Add(pid);
                    }
                }
                catch (IOException)
                {
                    // The process ended while being read.
                }
            }
        }

        return ids;
    }

    /// <summary>Stops a self-started server (fast shutdown: open connections are terminated), for outage tests.</summary>
    public async Task StopAsync()
    {
        ThrowIfExternal();
        await RunPostgresToolAsync("pg_ctl", ["-D", DataDirectory, "-m", "fast", "-w", "-t", "30", "stop"]);
        IsRunning = false;
    }

    /// <summary>Starts a self-started server again on the same port, with the same data.</summary>
    public async Task StartAsync()
    {
        ThrowIfExternal();
        var options = $"-p {Port} -c listen_addresses=127.0.0.1 -k {SocketDirectory} -c fsync=off -c synchronous_commit=off " +
            "-c full_page_writes=off -c max_connections=400 -c shared_buffers=64MB";
        await RunPostgresToolAsync("pg_ctl", ["-D", DataDirectory, "-l", Path.Combine(_root!, "server.log"), "-w", "-t", "30", "-o", options, "start"]);
        IsRunning = true;
    }

    /// <summary>
    /// Freezes (<c>SIGSTOP</c>) or thaws (<c>SIGCONT</c>) a self-started server by process id: the postmaster (from
    /// <c>postmaster.pid</c>) and every process it started, so open connections stay open but nothing answers, the
    /// outage that only a deadline ends.
    /// </summary>
    public async Task SetFrozenAsync(bool frozen)
    {
        ThrowIfExternal();
        var signal = frozen ? "-STOP" : "-CONT";
        var postmaster = int.Parse((await File.ReadAllLinesAsync(Path.Combine(DataDirectory, "postmaster.pid")))[0].Trim());

        // The postmaster first, so it starts no new backend while its children are found and stopped.
        await RunAsync("kill", [signal, postmaster.ToString()]);
        var children = new List<string>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out var pid) && pid != postmaster)
            {
                try
                {
                    // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so read after the last ')'.
                    var stat = await File.ReadAllTextAsync(Path.Combine(dir, "stat"));
                    if (int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]) == postmaster)
                    {
                        children.Add(pid.ToString());
                    }
                }
                catch (IOException)
                {
                    // The process ended meanwhile.
                }
            }
        }

        if (children.Count > 0)
        {
            try
            {
                await RunAsync("kill", [signal, .. children]);
            }
            catch (InvalidOperationException)
            {
                // kill signals every process it can and fails for one that has ended since it was listed: nothing to do for that one.
            }
        }
    }

    /// <summary>Creates an empty database and returns its connection string.</summary>
    public async Task<string> CreateDatabaseAsync()
    {
        var name = NewName("idem");
        await ExecuteAsync($"CREATE DATABASE \"{name}\"");
        return new NpgsqlConnectionStringBuilder(ConnectionString) { Database = name }.ConnectionString;
    }

    /// <summary>Runs one SQL statement in the test database.</summary>
    public async Task<object?> ExecuteAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return await command.ExecuteScalarAsync();
    }

    /// <summary>A unique lower-case identifier, e.g. for a schema, table or channel.</summary>
    public static string NewName(string prefix) => prefix + "_" + Guid.NewGuid().ToString("N")[..16];

    /// <inheritdoc />
    public async Task DisposeAsync()
    {
        if (IsExternal || _root is null)
        {
            return;
        }

        if (!_private)
        {
            NpgsqlConnection.ClearAllPools();
        }

        try
        {
            if (IsRunning)
            {
                await RunPostgresToolAsync("pg_ctl", ["-D", DataDirectory, "-m", "immediate", "-w", "stop"]);
            }
        }
        finally
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    private static bool IsRoot => Environment.UserName == "root";

    private void ThrowIfExternal()
    {
        if (IsExternal)
        {
            throw new NotSupportedException($"The server from {EnvironmentVariable} is not started or stopped by the tests.");
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static Task RunPostgresToolAsync(string tool, IReadOnlyList<string> arguments)
    {
        var binDirectory = Environment.GetEnvironmentVariable("IDEM_TEST_POSTGRES_BIN") ?? DefaultBinDirectory;
        var path = Path.Combine(binDirectory, tool);

        // PostgreSQL refuses to run as root: run its tools as the postgres user then.
        return IsRoot ? RunAsync("runuser", ["-u", "postgres", "--", path, .. arguments]) : RunAsync(path, arguments);
    }

    private static async Task RunAsync(string fileName, IReadOnlyList<string> arguments)
    {
        var startInfo = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = "/",
        };
        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        using var process = Process.Start(startInfo) ?? throw new InvalidOperationException($"Could not start {fileName}.");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"{fileName} {string.Join(' ', arguments)} exited with {process.ExitCode}:\n{await output}\n{await error}");
        }
    }
}
