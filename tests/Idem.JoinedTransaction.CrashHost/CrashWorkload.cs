using System.Data.Common;
using System.Diagnostics.Metrics;
using System.Net.Http.Json;
using Idem.PostgreSql;
using Idem.Sqlite;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Idem.JoinedTransaction.CrashHost;

/// <summary>Where a crash host kills itself (SIGKILL), in the order a request passes them.</summary>
public static class CrashPoints
{
    /// <summary>No crash: the request completes (the retry, and the baseline).</summary>
    public const string None = "none";

    /// <summary>Inside phase 1 ("charge"), after the foreign call returned, before the phase is recorded.</summary>
    public const string InCharge = "in-charge";

    /// <summary>Inside phase 2 ("ship"), after its foreign call returned; phase 1 is recorded.</summary>
    public const string InShip = "in-ship";

    /// <summary>After both phases, before the business write.</summary>
    public const string BeforeWrite = "before-write";

    /// <summary>After the business write, before the commit that holds it.</summary>
    public const string AfterWrite = "after-write";

    /// <summary>
    /// After the commit that holds the business write, before the response leaves. Joined: that commit holds the
    /// completion too. Separate store: the completion is still to come.
    /// </summary>
    public const string AfterCommit = "after-commit";

    public static readonly string[] All = [InCharge, InShip, BeforeWrite, AfterWrite, AfterCommit];
}

/// <summary>The order a request creates, and the response every caller of its key must get.</summary>
public sealed record OrderResponse(long Id, string Charge, string Shipment);

/// <summary>
/// The two-phase handler under test, shared by the crash host (which kills itself at one point) and the test (which
/// retries in process): charge through the foreign service, ship through it, then write the order.
/// </summary>
public sealed class CrashWorkload(string database, string connection, string schema, Uri foreign, bool joined)
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(30) };

    public IdempotencyPolicy Policy { get; } = IdempotencyPolicy.Default with
    {
        Lease = TimeSpan.FromSeconds(1),
        JoinedTransaction = joined,
        WaitTimeout = TimeSpan.FromSeconds(60),
        // These tests are about crash points, not store timeouts: on a loaded box (load 60 in one run) a claim took more
        // than the default 5 s, and a host that gives up before its crash point proves nothing.
        StoreTimeout = TimeSpan.FromSeconds(60),
    };

    public static IIdempotencyStore CreateStore(string database, string connection, string schema) => database switch
    {
        "sqlite" => new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = connection }),
        "postgres" => new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions
        {
            ConnectionString = connection,
            SchemaName = schema,
            NotificationChannel = schema + "_changed",
            CreateSchemaAutomatically = false, // migrated once by the test, not raced by every host
        }),
        _ => throw new ArgumentException("database is sqlite or postgres", nameof(database)),
    };

    public static IdempotencyExecutor CreateExecutor(IIdempotencyStore store) => new(store, new IdempotencyMetrics(new PlainMeterFactory()));

    public string OrdersTable => database == "sqlite" ? "orders" : $"\"{schema}\".orders";

    /// <summary>Runs the request for <paramref name="key"/>; <paramref name="crash"/> is called at each point.</summary>
    public async Task<OrderResponse> RunAsync(IdempotencyExecutor executor, string key, Action<string> crash)
    {
        var response = await executor.ExecuteOnceAsync(
            "orders",
            key,
            key,
            async execution =>
            {
                var charge = await execution.RunPhaseAsync("charge", async phase =>
                {
                    var result = await CallForeignAsync("charge", key, phase.IdempotencyKey);
                    crash(CrashPoints.InCharge);
                    return result;
                });
                var shipment = await execution.RunPhaseAsync("ship", async phase =>
                {
                    var result = await CallForeignAsync("ship", key, phase.IdempotencyKey);
                    crash(CrashPoints.InShip);
                    return result;
                });

                crash(CrashPoints.BeforeWrite);
                long id;
                if (joined)
                {
                    var transaction = await execution.GetTransactionAsync();
                    id = await InsertOrderAsync(transaction, key, charge, shipment);
                    crash(CrashPoints.AfterWrite); // Idem commits the write with the completion after this returns
                }
                else
                {
                    // The separate store: the handler's own transaction commits before Idem stores the response.
                    await using var connection1 = await OpenAsync();
                    await using var transaction = await connection1.BeginTransactionAsync();
                    id = await InsertOrderAsync(transaction, key, charge, shipment);
                    crash(CrashPoints.AfterWrite);
                    await transaction.CommitAsync();
                    crash(CrashPoints.AfterCommit);
                }

                return new OrderResponse(id, charge, shipment);
            },
            Policy);

        if (joined)
        {
            crash(CrashPoints.AfterCommit); // committed with the completion; the response has not left yet
        }

        return response;
    }

    public async Task CreateSchemaAsync(IIdempotencyStore store, string schema)
    {
        if (store is PostgreSqlIdempotencyStore postgres)
        {
            var options = new PostgreSqlIdempotencyStoreOptions { SchemaName = schema, NotificationChannel = schema + "_changed" };
            await new PostgreSqlIdempotencyMigrator(postgres.DataSource, options).MigrateAsync(CancellationToken.None);
        }
        else
        {
            await store.GetAsync("warm-up", CancellationToken.None); // creates the SQLite schema
        }

        await using var connection1 = await OpenAsync();
        await using var command = connection1.CreateCommand();
        command.CommandText = database == "sqlite"
            ? "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT, idem_key TEXT NOT NULL, charge TEXT NOT NULL, shipment TEXT NOT NULL);"
            : $"CREATE SCHEMA IF NOT EXISTS \"{schema}\"; CREATE TABLE IF NOT EXISTS \"{schema}\".orders (id bigserial PRIMARY KEY, idem_key text NOT NULL, charge text NOT NULL, shipment text NOT NULL);";
        await command.ExecuteNonQueryAsync();
    }

    public async Task<DbConnection> OpenAsync()
    {
        DbConnection opened = database == "sqlite" ? new SqliteConnection($"Data Source={connection}") : new NpgsqlConnection(connection);
        await opened.OpenAsync();
        return opened;
    }

    private async Task<long> InsertOrderAsync(DbTransaction transaction, string key, string charge, string shipment)
    {
        await using var command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = $"INSERT INTO {OrdersTable} (idem_key, charge, shipment) VALUES (@key, @charge, @shipment) RETURNING id";
        Add(command, "key", key);
        Add(command, "charge", charge);
        Add(command, "shipment", shipment);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }

    private static void Add(DbCommand command, string name, string value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value;
        command.Parameters.Add(parameter);
    }

    private async Task<string> CallForeignAsync(string phase, string order, string idempotencyKey)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(foreign, $"/{phase}?order={Uri.EscapeDataString(order)}"));
        request.Headers.Add("Idempotency-Key", idempotencyKey);
        using var response = await Http.SendAsync(request);
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<string>())!;
    }

    private sealed class PlainMeterFactory : IMeterFactory
    {
        public Meter Create(MeterOptions options) => new(options);

        public void Dispose()
        {
        }
    }
}
