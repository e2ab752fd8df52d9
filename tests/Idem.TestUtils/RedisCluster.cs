using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Xunit;

namespace Idem.TestUtils;

/// <summary>
/// A real Redis Cluster for tests: 3 masters and 3 replicas on loopback. When <c>IDEM_TEST_REDIS_CLUSTER</c> holds the
/// comma-separated endpoints (test.sh starts one with <c>idem_start_redis_cluster</c>), that cluster is used; otherwise
/// this starts six <c>redis-server --cluster-enabled yes</c> nodes on free ports in temporary directories, joins them
/// with <c>redis-cli --cluster create … --cluster-replicas 1</c>, and on disposal kills them by process id. A test that
/// kills a master (a failover) asks for a private cluster with <see cref="StartPrivateAsync"/>.
/// </summary>
public sealed class RedisCluster : IAsyncLifetime
{
    /// <summary>The environment variable naming an existing cluster to use instead of starting one.</summary>
    public const string EnvironmentVariable = "IDEM_TEST_REDIS_CLUSTER";

    private readonly bool _private;
    private readonly List<Node> _nodes = [];
    private readonly List<int> _killed = [];
    private string? _root;

    /// <summary>A cluster for the whole run: the one in <see cref="EnvironmentVariable"/> when set, otherwise self-started.</summary>
    public RedisCluster()
    {
    }

    private RedisCluster(bool isPrivate) => _private = isPrivate;

    /// <summary>Every node's endpoint, comma-separated: one StackExchange.Redis configuration string.</summary>
    public string Configuration { get; private set; } = "";

    /// <summary>Starts a cluster for the caller alone, which the caller may kill nodes of and must dispose.</summary>
    public static async Task<RedisCluster> StartPrivateAsync()
    {
        var cluster = new RedisCluster(isPrivate: true);
        try
        {
            await cluster.InitializeAsync();
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <inheritdoc />
    public async Task InitializeAsync()
    {
        if (!_private && Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } external)
        {
            Configuration = external;
            return;
        }

        _root = Path.Combine(Path.GetTempPath(), "idem-redis-cluster-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_root);
        for (var i = 0; i < 6; i++)
        {
            _nodes.Add(StartNode(ClusterPort()));
        }

        foreach (var node in _nodes)
        {
            await WaitForPingAsync(node.Port);
        }

        var create = await RedisCliAsync(["--cluster", "create", .. _nodes.Select(n => "127.0.0.1:" + n.Port), "--cluster-replicas", "1", "--cluster-yes"]);
        if (create.ExitCode != 0)
        {
            throw new InvalidOperationException("redis-cli --cluster create failed: " + create.Output);
        }

        await WaitUntilAsync(async () =>
        {
            foreach (var node in _nodes)
            {
                if (!(await RedisCliAsync(["-p", node.Port.ToString(), "cluster", "info"])).Output.Contains("cluster_state:ok", StringComparison.Ordinal))
                {
                    return false;
                }
            }

            var replicas = 0;
            foreach (var node in _nodes)
            {
                var replication = (await RedisCliAsync(["-p", node.Port.ToString(), "info", "replication"])).Output;
                if (replication.Contains("role:slave", StringComparison.Ordinal))
                {
                    if (!replication.Contains("master_link_status:up", StringComparison.Ordinal))
                    {
                        return false;
                    }

                    replicas++;
                }
            }

            return replicas == 3;
        }, TimeSpan.FromSeconds(60), "the cluster to be up with three synced replicas");
        Configuration = string.Join(',', _nodes.Select(n => "127.0.0.1:" + n.Port));
    }

    /// <summary>The ports of the nodes that are masters now, each with the range of slots it serves first.</summary>
    public async Task<IReadOnlyList<int>> MasterPortsAsync()
    {
        var nodes = (await RedisCliAsync(["-p", AnyLivePort().ToString(), "cluster", "nodes"])).Output;
        return nodes.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(' '))
            .Where(f => f.Length > 2 && f[2].Contains("master", StringComparison.Ordinal) && !f[2].Contains("fail", StringComparison.Ordinal))
            .Select(f => int.Parse(f[1].Split('@')[0].Split(':')[1], System.Globalization.CultureInfo.InvariantCulture))
            .ToList();
    }

    /// <summary>The port of the master serving <paramref name="key"/> now.</summary>
    public async Task<int> MasterPortForKeyAsync(string key)
    {
        var slot = (await RedisCliAsync(["-p", AnyLivePort().ToString(), "cluster", "keyslot", key])).Output.Trim();
        var nodes = (await RedisCliAsync(["-p", AnyLivePort().ToString(), "cluster", "nodes"])).Output;
        var wanted = int.Parse(slot, System.Globalization.CultureInfo.InvariantCulture);
        foreach (var fields in nodes.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim().Split(' ')))
        {
            if (fields.Length < 9 || !fields[2].Contains("master", StringComparison.Ordinal) || fields[2].Contains("fail", StringComparison.Ordinal))
            {
                continue;
            }

            foreach (var range in fields.Skip(8))
            {
                var bounds = range.Split('-');
                if (bounds[0].StartsWith('['))
                {
                    continue;
                }

                var low = int.Parse(bounds[0], System.Globalization.CultureInfo.InvariantCulture);
                var high = bounds.Length > 1 ? int.Parse(bounds[1], System.Globalization.CultureInfo.InvariantCulture) : low;
                if (wanted >= low && wanted <= high)
                {
                    return int.Parse(fields[1].Split('@')[0].Split(':')[1], System.Globalization.CultureInfo.InvariantCulture);
                }
            }
        }

        throw new InvalidOperationException($"No live master serves slot {wanted}.");
    }

    /// <summary>Kills the node on <paramref name="port"/> at once (SIGKILL, by process id); only in a private cluster.</summary>
    public async Task KillAsync(int port)
    {
        var node = _nodes.Single(n => n.Port == port);
        if (!node.Process.HasExited)
        {
            node.Process.Kill();
            await node.Process.WaitForExitAsync();
        }

        _killed.Add(port);
    }

    /// <summary>The port of the replica of the master on <paramref name="masterPort"/>.</summary>
    public static async Task<int> ReplicaPortOfAsync(int masterPort)
    {
        var lines = (await RedisCliAsync(["-p", masterPort.ToString(), "cluster", "nodes"])).Output
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim().Split(' ')).ToList();
        var masterId = lines.Single(f => f[2].Contains("myself", StringComparison.Ordinal))[0];
        var replica = lines.Single(f => f[2].Contains("slave", StringComparison.Ordinal) && f[3] == masterId);
        return int.Parse(replica[1].Split('@')[0].Split(':')[1], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Freezes (<c>SIGSTOP</c>) or thaws (<c>SIGCONT</c>) the node on <paramref name="port"/>, by process id.</summary>
    public async Task SetFrozenAsync(int port, bool frozen)
    {
        var node = _nodes.Single(n => n.Port == port);
        using var kill = Process.Start("kill", [frozen ? "-STOP" : "-CONT", node.Process.Id.ToString()]);
        await kill.WaitForExitAsync();
    }

    /// <summary>
    /// Cuts the master's replication links (<c>CLIENT KILL TYPE replica</c>): with its replica frozen, nothing the master
    /// acknowledges from now on reaches the replica (a frozen replica alone would still read what the kernel buffered).
    /// </summary>
    public static async Task CutReplicationAsync(int masterPort)
    {
        var result = await RedisCliAsync(["-p", masterPort.ToString(), "client", "kill", "type", "replica"]);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException("CLIENT KILL TYPE replica failed: " + result.Output);
        }
    }

    /// <summary>
    /// Waits until every live node has marked each killed node as failed (not merely suspected) and serves all slots
    /// again: a replica took over each killed master.
    /// </summary>
    public Task WaitForFailoverAsync(TimeSpan timeout) => WaitUntilAsync(
        async () =>
        {
            foreach (var node in _nodes.Where(n => !n.Process.HasExited))
            {
                if (!(await RedisCliAsync(["-p", node.Port.ToString(), "cluster", "info"])).Output.Contains("cluster_state:ok", StringComparison.Ordinal))
                {
                    return false;
                }

                var lines = (await RedisCliAsync(["-p", node.Port.ToString(), "cluster", "nodes"])).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
                foreach (var killed in _killed)
                {
                    var line = lines.Select(l => l.Trim().Split(' ')).FirstOrDefault(f => f.Length > 2 && f[1].StartsWith("127.0.0.1:" + killed + "@", StringComparison.Ordinal));
                    if (line is null || !line[2].Split(',').Contains("fail") || line.Length > 8)
                    {
                        return false;
                    }
                }
            }

            return true;
        },
        timeout,
        "a replica to take over the killed master");

    /// <inheritdoc />
    public async Task DisposeAsync()
    {
        foreach (var node in _nodes)
        {
            if (!node.Process.HasExited)
            {
                node.Process.Kill();
                await node.Process.WaitForExitAsync();
            }

            node.Process.Dispose();
        }

        if (_root is not null)
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    /// <summary>Runs <c>redis-cli</c> with <paramref name="arguments"/>, bounded to 10 s.</summary>
    public static async Task<(int ExitCode, string Output)> RedisCliAsync(IEnumerable<string> arguments)
    {
        var startInfo = new ProcessStartInfo("redis-cli") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        using var process = Process.Start(startInfo) ?? throw new InvalidOperationException("Could not start redis-cli.");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
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

        return (process.ExitCode, await output + await error);
    }

    private int AnyLivePort() => _nodes.Count == 0
        ? int.Parse(Configuration.Split(',')[0].Split(':')[1], System.Globalization.CultureInfo.InvariantCulture)
        : _nodes.First(n => !n.Process.HasExited).Port;

    private Node StartNode(int port)
    {
        var dir = Path.Combine(_root!, port.ToString());
        Directory.CreateDirectory(dir);
        var startInfo = new ProcessStartInfo("redis-server") { UseShellExecute = false, WorkingDirectory = dir };
        foreach (var argument in new[]
                 {
                     "--port", port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
                     "--logfile", Path.Combine(dir, "redis.log"), "--daemonize", "no", "--cluster-enabled", "yes",
                     "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
                 })
        {
            startInfo.ArgumentList.Add(argument);
        }

        return new Node(port, Process.Start(startInfo) ?? throw new InvalidOperationException("Could not start redis-server."));
    }

    private static async Task WaitForPingAsync(int port)
    {
        await WaitUntilAsync(
            async () =>
            {
                try
                {
                    using var client = new TcpClient();
                    await client.ConnectAsync(IPAddress.Loopback, port);
                    return true;
                }
                catch (SocketException)
                {
                    return false;
                }
            },
            TimeSpan.FromSeconds(10),
            $"redis-server on port {port}");
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var started = Stopwatch.StartNew();
        while (!await condition())
        {
            if (started.Elapsed > timeout)
            {
                throw new TimeoutException($"Timed out after {timeout.TotalSeconds} s waiting for {what}.");
            }

            await Task.Delay(100);
        }
    }

    // The cluster bus listens on port + 10000: both must be free and below 65536.
    private static int ClusterPort()
    {
        for (var attempt = 0; attempt < 100; attempt++)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            if (port >= 55536)
            {
                continue;
            }

            try
            {
                using var bus = new TcpListener(IPAddress.Loopback, port + 10000);
                bus.Start();
                return port;
            }
            catch (SocketException)
            {
            }
        }

        throw new InvalidOperationException("No free port pair for a cluster node.");
    }

    private sealed record Node(int Port, Process Process);
}
