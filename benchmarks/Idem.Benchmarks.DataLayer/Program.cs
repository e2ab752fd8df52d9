// The data layer's cost (issue 19), as ratios against plain statements measured in the same run, on SQLite and
// PostgreSQL: create-or-get of an existing row against a plain SELECT by the unique key, create-or-get of a new row
// against a plain INSERT (ADO.NET and EF Core), and the statements a unique slug costs under 100-way contention.
// Sequential calls on one open connection (one context per call for EF Core), the plain ADO.NET statements prepared as
// the helper's are on PostgreSQL, in alternating rounds so that the box's
// drift hits both sides of a ratio alike; each ratio is the median of the rounds' ratios.
//
// Usage: Idem.Benchmarks.DataLayer --postgres <connection string> [--postgres-durable <connection string>] [--ops 1000]
//        [--rounds 5] [--out results.md] [--only <case text>]
// The PostgreSQL connections must be allowed to create and drop a database. benchmarks/datalayer.sh starts two servers:
// one with the test suite's settings (fsync and synchronous_commit off, so that a write costs its CPU and nothing else)
// and one with PostgreSQL's default durability (every commit flushed to disk, as every SQLite write here is), on which
// only the cases that write are run again.
using System.Data.Common;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Idem;
using Idem.EntityFrameworkCore;
using Idem.PostgreSql;
using Idem.Sqlite;
using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Npgsql;

var options = Args.Parse(args);
var report = new StringBuilder();
report.AppendLine("# Data-layer benchmark results").AppendLine()
    .AppendLine(CultureInfo.InvariantCulture, $"Run {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC on {Environment.ProcessorCount} cores (load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]} at the start, {{END_LOAD}} at the end), {options.Ops} sequential calls per case and round ({Math.Max(50, options.Ops / 4)} for SQLite writes, each an fsync), {options.Rounds} alternating rounds; ratio = median over rounds of (helper calls/s ÷ plain calls/s in the same round), the two sides run in interleaved blocks of 20 calls. Plain ADO.NET statements bind every value they insert, as the helper does, and are prepared, as the helper's are on PostgreSQL (Npgsql keeps them prepared per physical connection); EF Core prepares nothing on either side. CPU per call is this process's CPU time (getrusage) plus, on PostgreSQL, the CPU time of the database's server processes (/proc/<pid>/schedstat), summed per side over the same interleaved blocks (on PostgreSQL this process's share is given in brackets, the rest is the server's); its ratio (plain ÷ helper, the median over rounds) moves far less with the box's load than calls/s do. \"PostgreSQL\" is a server with the test suite's settings (fsync, synchronous_commit and full_page_writes off: a write costs its CPU and nothing else); \"PostgreSQL, durable\" is a second server with PostgreSQL's defaults (every commit flushed to disk, as every SQLite write here is), on which the cases that write are run again. There the process waits for the disk and its thread pool spins meanwhile, so its CPU per call says little.").AppendLine()
    .AppendLine("| Database | Case | Plain calls/s | Helper calls/s | Ratio | Target | CPU µs per call, plain → helper | CPU ratio |")
    .AppendLine("|---|---|---:|---:|---:|---|---:|---:|");
var slugLines = new List<string>();

var databases = new List<Database> { await SqliteDatabase.CreateAsync(), await PostgreSqlDatabase.CreateAsync(options.Postgres, durable: false) };
if (options.PostgresDurable is { } durableServer)
{
    databases.Add(await PostgreSqlDatabase.CreateAsync(durableServer, durable: true));
}

foreach (var database in databases)
{
    await using (database)
    {
        Console.Error.WriteLine($"[{database.Name}] populating");
        await database.PopulateAsync(options.Ops * options.Rounds * 2);
        // (case, target, plain, helper, writes): the cases marked "option" time one way the helper could be written,
        // as raw SQL against the same baseline, so the chosen one can be compared with the others in one run.
        var sqlite = database is SqliteDatabase;
        var pairs = new List<(string Case, string Target, Func<int, Task> Plain, Func<int, Task> Helper, bool Writes)>
        {
            ("ADO.NET, existing row: create-or-get vs SELECT by key", "≥ 0.9×", database.SelectAsync, database.CreateOrGetExistingAsync, false),
            ("baseline option: existing row, create-or-get vs SELECT by key on one command kept prepared", "—", database.SelectKeptAsync, database.CreateOrGetExistingAsync, false),
            ("option: existing row, INSERT … ON CONFLICT DO NOTHING RETURNING, then SELECT (two commands) vs SELECT", "—", database.SelectAsync, database.InsertThenReadExistingAsync, false),
        };
        if (!sqlite)
        {
            pairs.Add(("option: existing row, the insert-first one statement (INSERT … ON CONFLICT DO NOTHING in a CTE, then the read if it inserted nothing) vs SELECT", "—", database.SelectAsync, database.InsertFirstStatementExistingAsync, false));
            pairs.Add(("option: existing row, the read-first one statement (the helper's SQL, sent as a plain command) vs SELECT", "—", database.SelectAsync, database.ReadFirstStatementExistingAsync, false));
            pairs.Add(("option: existing row, the read-first one statement vs the insert-first one statement (both plain commands)", "—", database.InsertFirstStatementExistingAsync, database.ReadFirstStatementExistingAsync, false));
        }
        if (sqlite)
        {
            pairs.Add(("option: existing row, INSERT … RETURNING; SELECT … AND changes() = 0 in one command vs SELECT", "—", database.SelectAsync, database.BatchExistingAsync, false));
        }

        pairs.Add(("ADO.NET, new row: create-or-get vs INSERT", "≥ 0.9×", database.InsertAsync, database.CreateOrGetNewAsync, true));
        pairs.Add(("baseline option: new row, create-or-get vs INSERT … RETURNING id (the plain insert that hands back the generated id, as the helper does)", "—", database.InsertReturningAsync, database.CreateOrGetNewAsync, true));
        if (!sqlite)
        {
            pairs.Add(("option: new row, the insert-first one statement vs INSERT", "—", database.InsertAsync, database.InsertFirstStatementNewAsync, true));
            pairs.Add(("option: new row, the read-first one statement vs the insert-first one statement (both plain commands)", "—", database.InsertFirstStatementNewAsync, database.ReadFirstStatementNewAsync, true));
        }
        if (!sqlite)
        {
            pairs.Add(("ADO.NET, mixed (each call an existing or a new row, half and half in a fixed pseudo-random order): create-or-get vs the combined statement alone (as a plain command)", "—", database.ReadFirstStatementMixedAsync, database.CreateOrGetMixedAsync, true));
        }

        pairs.Add((sqlite ? "option: new row, INSERT … ON CONFLICT DO NOTHING RETURNING alone (no read first) vs INSERT" : "option: new row, INSERT … ON CONFLICT DO NOTHING RETURNING alone (no folded read) vs INSERT", "—", database.InsertAsync, database.InsertOrNothingNewAsync, true));
        if (!sqlite)
        {
            pairs.Add(("option: new row, create-or-get vs INSERT … ON CONFLICT DO NOTHING RETURNING alone (the statement it sends once its recent calls all created their row): the helper's own cost", "—", database.InsertOrNothingNewAsync, database.CreateOrGetNewAsync, true));
        }

        pairs.Add(("EF Core, existing row: CreateOrGetAsync vs FirstAsync by key", "—", database.EfSelectAsync, database.EfCreateOrGetExistingAsync, false));
        pairs.Add(("EF Core, new row: CreateOrGetAsync vs Add + SaveChangesAsync", "—", database.EfInsertAsync, database.EfCreateOrGetNewAsync, true));
        pairs.Add(("EF Core, mixed (half existing, half new rows, as the ADO.NET mixed case): CreateOrGetAsync vs FirstOrDefaultAsync by key, then Add + SaveChangesAsync when missing (check-then-insert)", "—", database.EfCheckThenInsertMixedAsync, database.EfCreateOrGetMixedAsync, true));
        pairs.Add(("ADO.NET, unique slug of a new name (no contention) vs INSERT of the row with its slug", "—", database.InsertCommunityAsync, database.InsertCommunityWithSlugAsync, true));
        for (var index = 0; index < pairs.Count; index++)
        {
            var (name, target, plain, helper, writes) = pairs[index];
            if ((options.Only is { } only && !name.Contains(only, StringComparison.OrdinalIgnoreCase))
                || (database is PostgreSqlDatabase { Durable: true } && !writes))
            {
                continue;
            }

            // Writes of each case use keys of their own (the same plain INSERT is the baseline of several cases).
            var keys = writes ? index * 10_000_000 : 0;
            // SQLite commits every write with an fsync: fewer calls keep the run short.
            var ops = writes && sqlite ? Math.Max(50, options.Ops / 4) : options.Ops;
            Console.Error.WriteLine($"[{database.Name}] {name} ({ops} calls per round)");
            await RunAsync(plain, Math.Min(200, ops), keys);
            await RunAsync(helper, Math.Min(200, ops), keys);
            var ratios = new List<double>();
            var plainRates = new List<double>();
            var helperRates = new List<double>();
            var plainCpu = new List<double>();
            var helperCpu = new List<double>();
            var cpuRatios = new List<double>();
            var plainAppCpu = new List<double>();
            var helperAppCpu = new List<double>();
            var cpu = await database.CpuClockAsync();
            for (var round = 0; round < options.Rounds; round++)
            {
                var offset = keys + (round + 1) * options.Ops;
                var (p, h, pc, hc, pa, ha) = await PairAsync(plain, helper, ops, offset, cpu);
                plainAppCpu.Add(pa);
                helperAppCpu.Add(ha);
                plainRates.Add(p);
                helperRates.Add(h);
                ratios.Add(h / p);
                plainCpu.Add(pc);
                helperCpu.Add(hc);
                cpuRatios.Add(pc / hc);
            }

            report.AppendLine(CultureInfo.InvariantCulture, $"| {database.Name} | {name} | {Median(plainRates):N0} | {Median(helperRates):N0} | {Median(ratios):0.00}× (rounds {string.Join(", ", ratios.Select(r => r.ToString("0.00", CultureInfo.InvariantCulture)))}) | {target} | {Median(plainCpu):0.0} → {Median(helperCpu):0.0}{(sqlite ? "" : string.Create(CultureInfo.InvariantCulture, $" (this process {Median(plainAppCpu):0.0} → {Median(helperAppCpu):0.0})"))} | {Median(cpuRatios):0.00}× (rounds {string.Join(", ", cpuRatios.Select(r => r.ToString("0.00", CultureInfo.InvariantCulture)))}) |");
            Console.Error.WriteLine(report.ToString().TrimEnd().Split('\n')[^1]);
        }

        for (var trial = 1; trial <= 3 && options.Only is null && database is not PostgreSqlDatabase { Durable: true }; trial++)
        {
            var (statements, seconds) = await database.SlugContentionAsync($"Contended Name {trial}", 100);
            slugLines.Add(string.Create(CultureInfo.InvariantCulture, $"| {database.Name} | {trial} | 100 | {statements} | {statements / 100.0:0.00} | {seconds:0.00} s |"));
            Console.Error.WriteLine(slugLines[^1]);
        }
    }
}

report.AppendLine().AppendLine("Unique slugs, 100 concurrent creates of one name (each on its own connection, released together), ADO.NET helper:").AppendLine()
    .AppendLine("| Database | Trial | Creates | Insert statements | Statements per create | Wall time |")
    .AppendLine("|---|---:|---:|---:|---:|---:|");
foreach (var line in slugLines)
{
    report.AppendLine(line);
}

report.Replace("{END_LOAD}", File.ReadAllText("/proc/loadavg").Split(' ')[0]);
await File.WriteAllTextAsync(options.Out, report.ToString());
Console.Out.Write(report);
return 0;

static async Task<double> RunAsync(Func<int, Task> call, int count, int offset)
{
    var started = Stopwatch.GetTimestamp();
    for (var i = 0; i < count; i++)
    {
        await call(offset + i);
    }

    return count / Stopwatch.GetElapsedTime(started).TotalSeconds;
}

// Both sides of a ratio in interleaved blocks of 20 calls (which side goes first alternates), so that the shared box's
// drift, which moves single rounds by 2× and more, hits both sides alike; the elapsed time is summed per side, and so
// is the CPU time (read outside the timed part): calls/s of each side and CPU µs per call of each side.
static async Task<(double Plain, double Helper, double PlainCpu, double HelperCpu, double PlainAppCpu, double HelperAppCpu)> PairAsync(Func<int, Task> plain, Func<int, Task> helper, int count, int offset, Func<long> cpu)
{
    const int Block = 20;
    long plainTicks = 0, helperTicks = 0, plainNs = 0, helperNs = 0, plainAppNs = 0, helperAppNs = 0;
    for (var start = 0; start < count; start += Block)
    {
        var n = Math.Min(Block, count - start);
        for (var side = 0; side < 2; side++)
        {
            var helperSide = (side == 0) == (start / Block % 2 == 1);
            var call = helperSide ? helper : plain;
            var cpuBefore = cpu();
            var appBefore = Cpu.ProcessNs();
            var began = Stopwatch.GetTimestamp();
            for (var i = 0; i < n; i++)
            {
                await call(offset + start + i);
            }

            var elapsed = Stopwatch.GetTimestamp() - began;
            var appUsed = Cpu.ProcessNs() - appBefore;
            var cpuUsed = cpu() - cpuBefore;
            if (helperSide)
            {
                helperTicks += elapsed;
                helperNs += cpuUsed;
                helperAppNs += appUsed;
            }
            else
            {
                plainTicks += elapsed;
                plainNs += cpuUsed;
                plainAppNs += appUsed;
            }
        }
    }

    return (count * (double)Stopwatch.Frequency / plainTicks, count * (double)Stopwatch.Frequency / helperTicks, plainNs / 1000.0 / count, helperNs / 1000.0 / count,
        plainAppNs / 1000.0 / count, helperAppNs / 1000.0 / count);
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToArray();
    return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
}

internal static partial class Cpu
{
    /// <summary>This process's user + system CPU time (getrusage, RUSAGE_SELF), in nanoseconds.</summary>
    public static long ProcessNs()
    {
        _ = GetRusage(0, out var usage);
        return (usage.UserSeconds + usage.SystemSeconds) * 1_000_000_000 + (usage.UserMicroseconds + usage.SystemMicroseconds) * 1_000;
    }

    /// <summary>A process's CPU time from /proc/&lt;pid&gt;/schedstat (its first field, nanoseconds on CPU); 0 once it is gone.</summary>
    public static long SchedstatNs(string file)
    {
        try
        {
            var text = File.ReadAllText(file);
            return long.Parse(text.AsSpan(0, text.IndexOf(' ')), CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            return 0;
        }
    }

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int GetRusage(int who, out Rusage usage);

    // struct rusage on 64-bit Linux: two timevals (16 bytes each), then 14 longs.
    [StructLayout(LayoutKind.Sequential)]
    private struct Rusage
    {
        public long UserSeconds;
        public long UserMicroseconds;
        public long SystemSeconds;
        public long SystemMicroseconds;
        public long MaxRss, IxRss, IdRss, IsRss, MinFlt, MajFlt, NSwap, InBlock, OuBlock, MsgSnd, MsgRcv, NSignals, NvCsw, NivCsw;
    }
}

internal sealed record Args(string Postgres, string? PostgresDurable, int Ops, int Rounds, string Out, string? Only)
{
    public static Args Parse(string[] args)
    {
        string? Get(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        var postgres = Get("--postgres") ?? Environment.GetEnvironmentVariable("IDEM_BENCH_POSTGRES")
            ?? throw new ArgumentException("--postgres <connection string> is required (or IDEM_BENCH_POSTGRES).");
        return new Args(postgres, Get("--postgres-durable"), int.Parse(Get("--ops") ?? "1000", CultureInfo.InvariantCulture), int.Parse(Get("--rounds") ?? "5", CultureInfo.InvariantCulture), Get("--out") ?? "datalayer-results.md", Get("--only"));
    }
}

internal sealed class Item
{
    public long Id { get; set; }

    public string K { get; set; } = "";

    public string? V { get; set; }
}

internal sealed class BenchContext(DbContextOptions<BenchContext> options) : DbContext(options)
{
    public DbSet<Item> Items => Set<Item>();

    protected override void OnModelCreating(ModelBuilder modelBuilder) => modelBuilder.Entity<Item>(e =>
    {
        e.ToTable("items");
        e.Property(i => i.Id).HasColumnName("id");
        e.Property(i => i.K).HasColumnName("k");
        e.Property(i => i.V).HasColumnName("v");
    });
}

internal abstract class Database : IAsyncDisposable
{
    protected static readonly CreateOrGetDefinition Items = new("items", ["k", "v"], ["k"], ["id"]);
    private static readonly UniqueSlugDefinition Communities = new("communities", "slug", ["name"], ["id"]);

    private PooledDbContextFactory<BenchContext>? _contexts;
    private DbConnection? _connection;

    public abstract string Name { get; }

    protected DbConnection Connection => _connection!;

    protected abstract Task<DbConnection> OpenAsync();

    protected abstract DbContextOptions<BenchContext> ContextOptions { get; }

    protected abstract Task<CreateOrGetResult<long>> CreateOrGetAsync(DbConnection connection, string key, DbTransaction? transaction = null);

    protected abstract Task<long> InsertWithSlugAsync(DbConnection connection, string name);

    public async Task PopulateAsync(int existing)
    {
        _connection = await OpenAsync();
        _contexts = new PooledDbContextFactory<BenchContext>(ContextOptions);
        await using var transaction = await Connection.BeginTransactionAsync();
        for (var i = 0; i < existing; i++)
        {
            await ExecuteAsync("INSERT INTO items (k, v) VALUES (@k, @v)", "existing-" + i, transaction);
        }

        await transaction.CommitAsync();
    }

    public async Task SelectAsync(int i) => await ExecuteAsync("SELECT id FROM items WHERE k = @k", "existing-" + i);

    private DbCommand? _keptSelect;

    /// <summary>The strongest hand-written read: one command, prepared once, only its parameter's value set per call.</summary>
    public async Task SelectKeptAsync(int i)
    {
        if (_keptSelect is null)
        {
            _keptSelect = Connection.CreateCommand();
            _keptSelect.CommandText = "SELECT id FROM items WHERE k = @k";
            AddKey(_keptSelect, "");
            await _keptSelect.PrepareAsync();
        }

        _keptSelect.Parameters[0].Value = "existing-" + i;
        await using var reader = await _keptSelect.ExecuteReaderAsync();
        if (!await reader.ReadAsync())
        {
            throw new InvalidOperationException("Expected an existing row.");
        }
    }

    public async Task InsertReturningAsync(int i)
    {
        if (!await ExecuteAsync("INSERT INTO items (k, v) VALUES (@k, @v) RETURNING id", "plain-returning-" + i))
        {
            throw new InvalidOperationException("Expected the new row's id.");
        }
    }

    private const string InsertFirstStatement =
        "WITH idem_inserted AS (INSERT INTO items (k, v) VALUES (@k, @v) ON CONFLICT (k) DO NOTHING RETURNING id) " +
        "SELECT id, TRUE FROM idem_inserted UNION ALL SELECT id, FALSE FROM items WHERE k = @k AND NOT EXISTS (SELECT 1 FROM idem_inserted)";

    public async Task InsertFirstStatementExistingAsync(int i)
    {
        if (!await ExecuteAsync(InsertFirstStatement, "existing-" + i))
        {
            throw new InvalidOperationException("Expected the existing row.");
        }
    }

    private const string ReadFirstStatement =
        "WITH idem_found AS (SELECT id FROM items WHERE k = @k), " +
        "idem_inserted AS (INSERT INTO items (k, v) SELECT @k, @v WHERE NOT EXISTS (SELECT 1 FROM idem_found) ON CONFLICT (k) DO NOTHING RETURNING id) " +
        "SELECT id, FALSE FROM idem_found UNION ALL SELECT id, TRUE FROM idem_inserted";

    public async Task ReadFirstStatementExistingAsync(int i)
    {
        if (!await ExecuteAsync(ReadFirstStatement, "existing-" + i))
        {
            throw new InvalidOperationException("Expected the existing row.");
        }
    }

    public async Task ReadFirstStatementNewAsync(int i)
    {
        if (!await ExecuteAsync(ReadFirstStatement, "option-read-first-new-" + i))
        {
            throw new InvalidOperationException("Expected a new row.");
        }
    }

    /// <summary>Half the calls find an existing row, half create one, in an order no streak predicts for long.</summary>
    private static bool MixedExisting(int i) => ((uint)i * 2654435761u >> 16 & 1) == 0;

    public async Task ReadFirstStatementMixedAsync(int i)
    {
        var existing = MixedExisting(i);
        if (!await ExecuteAsync(ReadFirstStatement, existing ? "existing-" + (i % 1000) : "option-mixed-" + i))
        {
            throw new InvalidOperationException("Expected a row.");
        }
    }

    public async Task CreateOrGetMixedAsync(int i)
    {
        var existing = MixedExisting(i);
        Check(await CreateOrGetAsync(Connection, existing ? "existing-" + (i % 1000) : "helper-mixed-" + i), created: !existing);
    }

    public async Task InsertFirstStatementNewAsync(int i)
    {
        if (!await ExecuteAsync(InsertFirstStatement, "option-first-new-" + i))
        {
            throw new InvalidOperationException("Expected a new row.");
        }
    }

    /// <summary>CPU nanoseconds so far: this process, plus the server processes of this database (PostgreSQL).</summary>
    public virtual Task<Func<long>> CpuClockAsync() => Task.FromResult<Func<long>>(Cpu.ProcessNs);

    public async Task CreateOrGetExistingAsync(int i) => Check(await CreateOrGetAsync(Connection, "existing-" + i), created: false);

    public async Task InsertAsync(int i) => await ExecuteAsync("INSERT INTO items (k, v) VALUES (@k, @v)", "plain-new-" + i);

    public async Task CreateOrGetNewAsync(int i) => Check(await CreateOrGetAsync(Connection, "helper-new-" + i), created: true);

    public async Task InsertThenReadExistingAsync(int i)
    {
        if (await ExecuteAsync("INSERT INTO items (k, v) VALUES (@k, @v) ON CONFLICT (k) DO NOTHING RETURNING id", "existing-" + i)
            || !await ExecuteAsync("SELECT id FROM items WHERE k = @k", "existing-" + i))
        {
            throw new InvalidOperationException("Expected an existing row.");
        }
    }

    public async Task BatchExistingAsync(int i)
    {
        await using var command = Connection.CreateCommand();
        command.CommandText = "INSERT INTO items (k, v) VALUES (@k, @v) ON CONFLICT (k) DO NOTHING RETURNING id; SELECT id FROM items WHERE k = @k AND changes() = 0";
        AddKey(command, "existing-" + i);
        await using var reader = await command.ExecuteReaderAsync();
        var rows = 0;
        do
        {
            while (await reader.ReadAsync())
            {
                rows++;
            }
        }
        while (await reader.NextResultAsync());
        if (rows != 1)
        {
            throw new InvalidOperationException($"Expected one row, got {rows}.");
        }
    }

    public async Task InsertOrNothingNewAsync(int i)
    {
        if (!await ExecuteAsync("INSERT INTO items (k, v) VALUES (@k, @v) ON CONFLICT (k) DO NOTHING RETURNING id", "option-new-" + i))
        {
            throw new InvalidOperationException("Expected a new row.");
        }
    }

    public async Task InsertCommunityAsync(int i) => await ExecuteAsync("INSERT INTO communities (name, slug) VALUES (@k, @k)", "plain-slug-" + i);

    public async Task InsertCommunityWithSlugAsync(int i) => await InsertWithSlugAsync(Connection, "Helper Slug " + i);

    public async Task EfSelectAsync(int i)
    {
        await using var db = _contexts!.CreateDbContext();
        var key = "existing-" + i;
        await db.Items.FirstAsync(item => item.K == key);
    }

    public async Task EfCreateOrGetExistingAsync(int i)
    {
        await using var db = _contexts!.CreateDbContext();
        Check(await db.Items.CreateOrGetAsync(new Item { K = "existing-" + i, V = "v" }, item => item.K), created: false);
    }

    public async Task EfInsertAsync(int i)
    {
        await using var db = _contexts!.CreateDbContext();
        db.Items.Add(new Item { K = "ef-plain-new-" + i, V = "v" });
        await db.SaveChangesAsync();
    }

    public async Task EfCheckThenInsertMixedAsync(int i)
    {
        await using var db = _contexts!.CreateDbContext();
        var existing = MixedExisting(i);
        var key = existing ? "existing-" + (i % 1000) : "ef-plain-mixed-" + i;
        if (await db.Items.FirstOrDefaultAsync(item => item.K == key) is null)
        {
            if (existing)
            {
                throw new InvalidOperationException("Expected an existing row.");
            }

            db.Items.Add(new Item { K = key, V = "v" });
            await db.SaveChangesAsync();
        }
    }

    public async Task EfCreateOrGetMixedAsync(int i)
    {
        await using var db = _contexts!.CreateDbContext();
        var existing = MixedExisting(i);
        Check(await db.Items.CreateOrGetAsync(new Item { K = existing ? "existing-" + (i % 1000) : "ef-helper-mixed-" + i, V = "v" }, item => item.K), created: !existing);
    }

    public async Task EfCreateOrGetNewAsync(int i)
    {
        await using var db = _contexts!.CreateDbContext();
        Check(await db.Items.CreateOrGetAsync(new Item { K = "ef-helper-new-" + i, V = "v" }, item => item.K), created: true);
    }

    public async Task<(long Statements, double Seconds)> SlugContentionAsync(string name, int creates)
    {
        var connections = new DbConnection[creates];
        for (var i = 0; i < creates; i++)
        {
            connections[i] = await OpenAsync();
        }

        long statements = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == IdempotencyMetrics.MeterName && instrument.Name == "idem.data.slug_attempts")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref statements, value));
        listener.Start();
        try
        {
            var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var started = Stopwatch.GetTimestamp();
            var tasks = connections.Select(c => Task.Run(async () =>
            {
                await gate.Task;
                await InsertWithSlugAsync(c, name);
            })).ToArray();
            gate.SetResult();
            await Task.WhenAll(tasks);
            return (Interlocked.Read(ref statements), Stopwatch.GetElapsedTime(started).TotalSeconds);
        }
        finally
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }
        }
    }

    protected static Task<long> SlugAsync(Func<UniqueSlugDefinition, Task<long>> insert) => insert(Communities);

    private static void Check<T>(CreateOrGetResult<T> result, bool created)
    {
        if (result.Created != created)
        {
            throw new InvalidOperationException($"Expected created={created}.");
        }
    }

    /// <summary>Runs one statement; true when it returned a row.</summary>
    private async Task<bool> ExecuteAsync(string sql, string key, DbTransaction? transaction = null)
    {
        await using var command = Connection.CreateCommand();
        command.CommandText = sql;
        command.Transaction = transaction;
        AddKey(command, key);
        await command.PrepareAsync(); // as the helper does on PostgreSQL (a no-op once prepared on the connection; SQLite: nothing kept)
        await using var reader = await command.ExecuteReaderAsync();
        var row = false;
        while (await reader.ReadAsync())
        {
            row = true;
        }

        return row;
    }

    /// <summary>Binds the key, and the row's other value when the statement inserts it (as the helper binds every value it inserts).</summary>
    private static void AddKey(DbCommand command, string key)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = "@k";
        parameter.Value = key;
        command.Parameters.Add(parameter);
        if (command.CommandText.Contains("@v", StringComparison.Ordinal))
        {
            var value = command.CreateParameter();
            value.ParameterName = "@v";
            value.Value = "v";
            command.Parameters.Add(value);
        }
    }

    public virtual async ValueTask DisposeAsync()
    {
        if (_keptSelect is not null)
        {
            await _keptSelect.DisposeAsync();
        }

        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }
}

internal sealed class SqliteDatabase : Database
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "idem-bench-" + Guid.NewGuid().ToString("N")[..12]);
    private string _connectionString = "";

    public override string Name => "SQLite";

    public static async Task<SqliteDatabase> CreateAsync()
    {
        var database = new SqliteDatabase();
        Directory.CreateDirectory(database._directory);
        database._connectionString = new SqliteConnectionStringBuilder { DataSource = Path.Combine(database._directory, "bench.db"), DefaultTimeout = 60 }.ConnectionString;
        await using var connection = await database.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = """
            PRAGMA journal_mode = WAL;
            CREATE TABLE items (id INTEGER PRIMARY KEY, k TEXT NOT NULL UNIQUE, v TEXT);
            CREATE TABLE communities (id INTEGER PRIMARY KEY, name TEXT NOT NULL, slug TEXT NOT NULL UNIQUE);
            """;
        await command.ExecuteNonQueryAsync();
        return database;
    }

    protected override DbContextOptions<BenchContext> ContextOptions => new DbContextOptionsBuilder<BenchContext>().UseSqlite(_connectionString).Options;

    protected override async Task<DbConnection> OpenAsync()
    {
        var connection = new SqliteConnection(_connectionString);
        await connection.OpenAsync();
        return connection;
    }

    protected override Task<CreateOrGetResult<long>> CreateOrGetAsync(DbConnection connection, string key, DbTransaction? transaction = null) =>
        ((SqliteConnection)connection).CreateOrGetAsync(Items, [key, "v"], r => r.GetInt64(0), (SqliteTransaction?)transaction);

    protected override Task<long> InsertWithSlugAsync(DbConnection connection, string name) =>
        SlugAsync(d => ((SqliteConnection)connection).InsertWithUniqueSlugAsync(d, name, [name], r => r.GetInt64(0)));

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }
}

internal sealed class PostgreSqlDatabase : Database
{
    private string _admin = "";
    private string _name = "";
    private NpgsqlDataSource? _dataSource;

    /// <summary>Whether the server flushes every commit to disk (PostgreSQL's defaults) rather than running with the test suite's fsync off.</summary>
    public bool Durable { get; private init; }

    public override string Name => Durable ? "PostgreSQL, durable" : "PostgreSQL";

    public static async Task<PostgreSqlDatabase> CreateAsync(string admin, bool durable)
    {
        var database = new PostgreSqlDatabase { _admin = admin, _name = "idem_bench_" + Guid.NewGuid().ToString("N")[..12], Durable = durable };
        await using (var connection = new NpgsqlConnection(admin))
        {
            await connection.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE {database._name}", connection);
            await create.ExecuteNonQueryAsync();
        }

        database._dataSource = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(admin) { Database = database._name, MaxPoolSize = 150 }.ConnectionString);
        await using var command = database._dataSource.CreateCommand("""
            CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, k text NOT NULL UNIQUE, v text);
            CREATE TABLE communities (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, slug text COLLATE "C" NOT NULL UNIQUE);
            """);
        await command.ExecuteNonQueryAsync();
        return database;
    }

    protected override DbContextOptions<BenchContext> ContextOptions => new DbContextOptionsBuilder<BenchContext>().UseNpgsql(_dataSource!).Options;

    protected override async Task<DbConnection> OpenAsync() => await _dataSource!.OpenConnectionAsync();

    /// <summary>The server processes are those connected to this database when a case starts (the pool's).</summary>
    public override async Task<Func<long>> CpuClockAsync()
    {
        var pids = new List<int>();
        await using (var command = new NpgsqlCommand("SELECT pid FROM pg_stat_activity WHERE datname = current_database()", (NpgsqlConnection)Connection))
        await using (var reader = await command.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                pids.Add(reader.GetInt32(0));
            }
        }

        var files = pids.Select(p => $"/proc/{p}/schedstat").Where(File.Exists).ToArray();
        return () => Cpu.ProcessNs() + files.Sum(Cpu.SchedstatNs);
    }

    protected override Task<CreateOrGetResult<long>> CreateOrGetAsync(DbConnection connection, string key, DbTransaction? transaction = null) =>
        ((NpgsqlConnection)connection).CreateOrGetAsync(Items, [key, "v"], r => r.GetInt64(0), (NpgsqlTransaction?)transaction);

    protected override Task<long> InsertWithSlugAsync(DbConnection connection, string name) =>
        SlugAsync(d => ((NpgsqlConnection)connection).InsertWithUniqueSlugAsync(d, name, [name], r => r.GetInt64(0)));

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        if (_dataSource is not null)
        {
            await _dataSource.DisposeAsync();
        }

        NpgsqlConnection.ClearAllPools();
        await using var connection = new NpgsqlConnection(_admin);
        await connection.OpenAsync();
        await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS {_name} WITH (FORCE)", connection);
        await drop.ExecuteNonQueryAsync();
    }
}
