// The joined transaction's cost (issue 20, item 5), as a ratio measured in one run: a new key through
// IdempotencyExecutor.ExecuteOnceAsync whose work inserts one order row, (a) in the joined transaction (the insert and
// the key's completion commit together) against (b) the same operation with the store separate (the work opens its own
// pooled connection on the same database and commits its insert; the store then completes the key in its own
// statement). Same store, same database, same table; sequential calls; alternating rounds, the side that goes first
// alternating too, so the box's drift hits both sides alike. Each ratio is the median of the rounds' ratios
// (joined calls/s ÷ separate calls/s), with the spread (min–max) of the rounds.
//
// Usage: Idem.Benchmarks.Joined --postgres <connection string> [--ops 1000] [--rounds 6] [--out joined-results.md]
//        [--results results.md] (replaces the joined-transaction section of that file with the same figures)
// The PostgreSQL connection must be allowed to create and drop a database. benchmarks/joined.sh starts a server.
using System.Data.Common;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Idem;
using Idem.PostgreSql;
using Idem.Sqlite;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

var options = Args.Parse(args);
var metrics = new IdempotencyMetrics(new ServiceCollection().AddMetrics().BuildServiceProvider().GetRequiredService<IMeterFactory>());
var load = File.ReadAllText("/proc/loadavg").Split(' ')[0];
var report = new StringBuilder();
report.AppendLine("# Joined-transaction benchmark results").AppendLine()
    .AppendLine(CultureInfo.InvariantCulture, $"Run {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC on {Environment.ProcessorCount} cores (load average {load} at the start) by `benchmarks/joined.sh`: a new key per call through `IdempotencyExecutor.ExecuteOnceAsync`, whose work inserts one order row, in the joined transaction against the same operation with the store separate (the work commits its insert on its own pooled connection to the same database, then the store completes the key). {options.Ops} sequential calls per side and round, {options.Rounds} alternating rounds; ratio = median over rounds of (joined calls/s ÷ separate calls/s in the same round), spread = the rounds' lowest and highest ratio.").AppendLine()
    .AppendLine("| Database | Separate store calls/s | Joined calls/s | Ratio (median) | Spread (min–max) | Target |")
    .AppendLine("|---|---:|---:|---:|---:|---|");
var json = new List<object>();

foreach (var database in new BenchDatabase[] { await SqliteBench.CreateAsync(), await PostgreSqlBench.CreateAsync(options.Postgres) })
{
    await using (database)
    {
        var executor = new IdempotencyExecutor(database.Store, metrics);
        var separatePolicy = IdempotencyPolicy.Default;
        var joinedPolicy = IdempotencyPolicy.Default with { JoinedTransaction = true };
        var prefix = Guid.NewGuid().ToString("N")[..8];
        var next = 0;

        Task<double> SeparateAsync(int count) => RunAsync(count, () => executor.ExecuteOnceAsync("bench", $"s-{prefix}-{next++}", "f", async _ =>
        {
            await using var connection = await database.OpenBusinessConnectionAsync();
            await using var transaction = await database.BeginAsync(connection);
            var id = await database.InsertOrderAsync(connection, transaction);
            await transaction.CommitAsync();
            return id;
        }, separatePolicy));

        Task<double> JoinedAsync(int count) => RunAsync(count, () => executor.ExecuteOnceAsync("bench", $"j-{prefix}-{next++}", "f", async execution =>
        {
            var transaction = await execution.GetTransactionAsync();
            return await database.InsertOrderAsync(transaction.Connection!, transaction);
        }, joinedPolicy));

        Console.Error.WriteLine($"[{database.Name}] warming up");
        await SeparateAsync(Math.Max(100, options.Ops / 5));
        await JoinedAsync(Math.Max(100, options.Ops / 5));
        var ratios = new List<double>();
        var separateRates = new List<double>();
        var joinedRates = new List<double>();
        for (var round = 0; round < options.Rounds; round++)
        {
            double s, j;
            if (round % 2 == 0)
            {
                s = await SeparateAsync(options.Ops);
                j = await JoinedAsync(options.Ops);
            }
            else
            {
                j = await JoinedAsync(options.Ops);
                s = await SeparateAsync(options.Ops);
            }

            separateRates.Add(s);
            joinedRates.Add(j);
            ratios.Add(j / s);
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{database.Name}] round {round + 1}: separate {s:N0}/s, joined {j:N0}/s, ratio {j / s:0.00}"));
        }

        var target = database.Target;
        var median = Median(ratios);
        report.AppendLine(CultureInfo.InvariantCulture,
            $"| {database.Name} | {Median(separateRates):N0} | {Median(joinedRates):N0} | {median:0.00}× | {ratios.Min():0.00}–{ratios.Max():0.00} (rounds {string.Join(", ", ratios.Select(r => r.ToString("0.00", CultureInfo.InvariantCulture)))}) | ≥ {target:0.0}× {(median >= target ? "met" : "missed")} |");
        json.Add(new { database = database.Name, separatePerSecond = Median(separateRates), joinedPerSecond = Median(joinedRates), ratio = median, min = ratios.Min(), max = ratios.Max(), rounds = ratios, target });
        Console.Error.WriteLine($"[{database.Name}] rows: {await database.CountOrdersAsync()} orders");
    }
}

await File.WriteAllTextAsync(options.Out, report.ToString());
if (options.Results is { } results && File.Exists(results))
{
    // The same figures as a section of results.md, replaced on each run (the HTTP benchmark rewrites the rest of the file).
    const string Begin = "<!-- joined-transaction: written by benchmarks/joined.sh -->";
    const string End = "<!-- /joined-transaction -->";
    var text = await File.ReadAllTextAsync(results);
    if (text.IndexOf(Begin, StringComparison.Ordinal) is var start and >= 0 && text.IndexOf(End, start, StringComparison.Ordinal) is var end and >= 0)
    {
        text = text[..start].TrimEnd() + "\n" + text[(end + End.Length)..].TrimStart('\n');
    }

    var section = report.ToString().Replace("# Joined-transaction benchmark results", "## Joined transaction (issue 20)", StringComparison.Ordinal).Trim();
    await File.WriteAllTextAsync(results, text.TrimEnd() + "\n\n" + Begin + "\n" + section + "\n" + End + "\n");
}

await File.WriteAllTextAsync(Path.ChangeExtension(options.Out, ".json"),
    JsonSerializer.Serialize(new { run = DateTimeOffset.UtcNow, cores = Environment.ProcessorCount, load, options.Ops, options.Rounds, results = json }, new JsonSerializerOptions { WriteIndented = true }));
Console.Out.Write(report);
return 0;

static async Task<double> RunAsync(int count, Func<ValueTask<long>> call)
{
    var started = Stopwatch.GetTimestamp();
    for (var i = 0; i < count; i++)
    {
        await call();
    }

    return count / Stopwatch.GetElapsedTime(started).TotalSeconds;
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToArray();
    return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
}

internal sealed record Args(string Postgres, int Ops, int Rounds, string Out, string? Results)
{
    public static Args Parse(string[] args)
    {
        string? Get(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        var postgres = Get("--postgres") ?? Environment.GetEnvironmentVariable("IDEM_BENCH_POSTGRES")
            ?? throw new ArgumentException("--postgres <connection string> is required (or IDEM_BENCH_POSTGRES).");
        return new Args(postgres, int.Parse(Get("--ops") ?? "1000", CultureInfo.InvariantCulture), int.Parse(Get("--rounds") ?? "6", CultureInfo.InvariantCulture), Get("--out") ?? "joined-results.md", Get("--results"));
    }
}

/// <summary>One database holding both the idempotency store's table and the orders table.</summary>
internal abstract class BenchDatabase : IAsyncDisposable
{
    public abstract string Name { get; }

    public abstract double Target { get; }

    public abstract IIdempotencyStore Store { get; }

    public abstract Task<DbConnection> OpenBusinessConnectionAsync();

    public abstract Task<DbTransaction> BeginAsync(DbConnection connection);

    public async Task<long> InsertOrderAsync(DbConnection connection, DbTransaction transaction)
    {
        await using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO orders (item, amount) VALUES ($1, $2) RETURNING id";
        AddParameter(command, "$1", "book");
        AddParameter(command, "$2", 42);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
    }

    public async Task<long> CountOrdersAsync()
    {
        await using var connection = await OpenBusinessConnectionAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(*) FROM orders";
        return Convert.ToInt64(await command.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
    }

    protected abstract void AddParameter(DbCommand command, string name, object value);

    public abstract ValueTask DisposeAsync();
}

internal sealed class SqliteBench : BenchDatabase
{
    private string _directory = "";
    private string _business = "";
    private SqliteIdempotencyStore? _store;

    public override string Name => "SQLite";

    public override double Target => 0.9;

    public override IIdempotencyStore Store => _store!;

    public static async Task<SqliteBench> CreateAsync()
    {
        var bench = new SqliteBench { _directory = Directory.CreateTempSubdirectory("idem-joined-bench").FullName };
        var path = Path.Combine(bench._directory, "app.db");
        bench._business = new SqliteConnectionStringBuilder { DataSource = path, Pooling = true, DefaultTimeout = 30 }.ConnectionString;
        bench._store = new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = path });
        await using var connection = await bench.OpenBusinessConnectionAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode = WAL; CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, amount INTEGER NOT NULL)";
        await command.ExecuteNonQueryAsync();
        return bench;
    }

    public override async Task<DbConnection> OpenBusinessConnectionAsync()
    {
        var connection = new SqliteConnection(_business);
        await connection.OpenAsync();
        return connection;
    }

    // BEGIN IMMEDIATE, as Idem's joined transaction on SQLite: the write lock up front, no deadlock on upgrade.
    public override Task<DbTransaction> BeginAsync(DbConnection connection) => Task.FromResult<DbTransaction>(((SqliteConnection)connection).BeginTransaction(deferred: false));

    protected override void AddParameter(DbCommand command, string name, object value) => ((SqliteCommand)command).Parameters.AddWithValue(name, value);

    public override async ValueTask DisposeAsync()
    {
        if (_store is not null)
        {
            await _store.DisposeAsync();
        }

        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }
}

internal sealed class PostgreSqlBench : BenchDatabase
{
    private string _admin = "";
    private string _name = "";
    private NpgsqlDataSource? _business;
    private PostgreSqlIdempotencyStore? _store;

    public override string Name => "PostgreSQL";

    public override double Target => 1.0;

    public override IIdempotencyStore Store => _store!;

    public static async Task<PostgreSqlBench> CreateAsync(string admin)
    {
        var bench = new PostgreSqlBench { _admin = admin, _name = "idem_joined_" + Guid.NewGuid().ToString("N")[..12] };
        await using (var connection = new NpgsqlConnection(admin))
        {
            await connection.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE {bench._name}", connection);
            await create.ExecuteNonQueryAsync();
        }

        var connectionString = new NpgsqlConnectionStringBuilder(admin) { Database = bench._name }.ConnectionString;
        bench._business = NpgsqlDataSource.Create(connectionString);
        bench._store = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions { ConnectionString = connectionString, CreateSchemaAutomatically = true });
        await using var command = bench._business.CreateCommand("CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item text NOT NULL, amount integer NOT NULL)");
        await command.ExecuteNonQueryAsync();
        return bench;
    }

    public override async Task<DbConnection> OpenBusinessConnectionAsync() => await _business!.OpenConnectionAsync();

    public override async Task<DbTransaction> BeginAsync(DbConnection connection) => await connection.BeginTransactionAsync();

    protected override void AddParameter(DbCommand command, string name, object value) => command.Parameters.Add(new NpgsqlParameter { Value = value });

    public override async ValueTask DisposeAsync()
    {
        if (_store is not null)
        {
            await _store.DisposeAsync();
        }

        if (_business is not null)
        {
            await _business.DisposeAsync();
        }

        NpgsqlConnection.ClearAllPools();
        await using var connection = new NpgsqlConnection(_admin);
        await connection.OpenAsync();
        await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS {_name} WITH (FORCE)", connection);
        await drop.ExecuteNonQueryAsync();
    }
}
