// Driver-limit baselines (issue 21): POST /orders made idempotent by hand with the driver alone, doing exactly the round
// trips Idem's stores do, so that the benchmark can say how much of a store case's cost is Idem's and how much is the
// driver's and the server's.
//
//   npgsql      Npgsql alone: the PostgreSQL store's own claim statement, then its complete statement (a new key), or the
//               claim statement alone (a replay: it returns the completed record). Same data source, hence the same pool
//               settings (multiplexing, auto-prepare, no reset on close).
//   seredis     StackExchange.Redis alone: the Redis store's claim script, then its complete script; a replay is the claim
//               script alone.
//   tiered-raw  what the tiered store does: Redis HMGET of the cache entry (a replay ends there), the PostgreSQL claim and
//               complete statements, then the cache's set script.
//
// The statements and scripts are read from the stores themselves (by reflection: they are private, and a copy would drift),
// so a change to a store's SQL or Lua is measured on both sides. What the baselines leave out is everything else Idem does
// per request: key validation and scoping, the request fingerprint, the lease heartbeat, response capture, the problem
// answers, metrics, logs and the executor's deadlines.
using System.Reflection;
using System.Text;
using System.Text.Json;
using Idem;
using Idem.PostgreSql;
using Idem.Redis;
using Npgsql;
using StackExchange.Redis;

internal sealed class DriverBaseline : IAsyncDisposable
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Retention = TimeSpan.FromHours(24);

    // A request fingerprint the size of Idem's (64 hex digits), so the server stores and compares as much.
    private const string Fingerprint = "5f1e0c8a9b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f";
    // What the middleware passes with each claim (ClaimRequest.Metadata): the anonymous principal's hash and the operation.
    private static readonly IdempotencyRecordMetadata Metadata = IdempotencyRecordMetadata.Create(string.Empty, "POST /orders");
    private static readonly RedisValue[] CacheFields = ["s", "f", "o", "l", "e", "c", "h", "b", "m"];

    private readonly PostgreSqlIdempotencyStore? _postgres;
    private readonly NpgsqlDataSource? _dataSource;
    private readonly string? _claimSql, _completeSql, _channel;
    private readonly ConnectionMultiplexer? _redis;
    private readonly LuaScript? _claimScript, _completeScript, _cacheSetScript;
    private readonly string _prefix;
    private long _executions;

    private DriverBaseline(string kind, PostgreSqlIdempotencyStore? postgres, ConnectionMultiplexer? redis)
    {
        Kind = kind;
        _postgres = postgres;
        _redis = redis;
        if (postgres is not null)
        {
            _dataSource = postgres.DataSource;
            _claimSql = Private<string>(postgres, "_claimSql");
            _completeSql = Private<string>(postgres, "_completeSql");
            _channel = new PostgreSqlIdempotencyStoreOptions().NotificationChannel;
        }

        _claimScript = StaticPrivate<LuaScript>(typeof(RedisIdempotencyStore), "ClaimScript");
        _completeScript = StaticPrivate<LuaScript>(typeof(RedisIdempotencyStore), "CompleteScript");
        _cacheSetScript = StaticPrivate<LuaScript>(typeof(RedisIdempotencyResponseCache), "SetScript");
        _prefix = kind == "tiered-raw" ? RedisIdempotencyStoreOptions.DefaultCacheKeyPrefix : RedisIdempotencyStoreOptions.DefaultKeyPrefix;
    }

    public string Kind { get; }

    public long Executions => Interlocked.Read(ref _executions);

    public static async Task<DriverBaseline> CreateAsync(string kind, string? postgres, string? redis)
    {
        PostgreSqlIdempotencyStore? store = null;
        if (kind is "npgsql" or "tiered-raw")
        {
            // The store is created for its data source and its statements, and to create the schema; its listener runs
            // as it does in the Idem cases.
            var storeOptions = new PostgreSqlIdempotencyStoreOptions { ConnectionString = postgres, CreateSchemaAutomatically = true };
            store = new PostgreSqlIdempotencyStore(storeOptions);
            await new PostgreSqlIdempotencyMigrator(store.DataSource, storeOptions).MigrateAsync(CancellationToken.None);
        }

        ConnectionMultiplexer? multiplexer = null;
        if (kind is "seredis" or "tiered-raw")
        {
            // The settings RedisConnection applies to a multiplexer it builds.
            var configuration = ConfigurationOptions.Parse(redis!);
            configuration.AbortOnConnectFail = false;
            configuration.BacklogPolicy = BacklogPolicy.FailFast;
            configuration.AsyncTimeout = configuration.SyncTimeout = 2000;
            multiplexer = await ConnectionMultiplexer.ConnectAsync(configuration);
        }

        return new DriverBaseline(kind, store, multiplexer);
    }

    /// <summary>The endpoint: the same order, the same 201 with a Location and a JSON body as the bare handler.</summary>
    public async Task HandleAsync(HttpContext context)
    {
        var order = await context.Request.ReadFromJsonAsync(BenchJsonContext.Default.CreateOrder);
        var key = context.Request.Headers["Idempotency-Key"].ToString();
        if (order is null || key.Length == 0)
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            return;
        }

        var owner = Guid.NewGuid();
        var stored = Kind switch
        {
            "npgsql" => await PostgresClaimAsync(key, owner),
            "seredis" => await RedisClaimAsync(key, owner),
            _ => await TieredClaimAsync(key, owner),
        };
        if (stored is { } replay)
        {
            await WriteAsync(context, replay.Status, replay.Location, replay.Body);
            return;
        }

        Interlocked.Increment(ref _executions);
        var id = Guid.NewGuid();
        var location = $"/orders/{id}";
        var body = JsonSerializer.SerializeToUtf8Bytes(new Order(id, order.Amount), BenchJsonContext.Default.Order);
        switch (Kind)
        {
            case "npgsql":
                await PostgresCompleteAsync(key, owner, location, body);
                break;
            case "seredis":
                await RedisCompleteAsync(key, owner, location, body);
                break;
            default:
                await PostgresCompleteAsync(key, owner, location, body);
                await CacheSetAsync(key, owner, location, body);
                break;
        }

        await WriteAsync(context, StatusCodes.Status201Created, location, body);
    }

    public async ValueTask DisposeAsync()
    {
        if (_postgres is not null)
        {
            await _postgres.DisposeAsync();
        }

        if (_redis is not null)
        {
            await _redis.DisposeAsync();
        }
    }

    private static Task WriteAsync(HttpContext context, int status, string location, byte[] body)
    {
        context.Response.StatusCode = status;
        context.Response.Headers.Location = location;
        context.Response.ContentType = "application/json; charset=utf-8";
        context.Response.ContentLength = body.Length;
        return context.Response.Body.WriteAsync(body).AsTask();
    }

    // ---- PostgreSQL: the store's statements, its parameters, its result columns ----

    private async Task<Stored?> PostgresClaimAsync(string key, Guid owner)
    {
        await using var connection = await _dataSource!.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(_claimSql, connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = Fingerprint });
        command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = owner });
        command.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = Lease });
        command.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = Retention });
        command.Parameters.Add(new NpgsqlParameter { Value = Metadata.PrincipalHash, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter { Value = Metadata.Operation, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        await command.PrepareAsync(); // as the store does (not multiplexed): a no-op once prepared on the connection
        for (var attempt = 0; attempt < 16; attempt++)
        {
            await using var reader = await command.ExecuteReaderAsync();
            if (!await reader.ReadAsync() || reader.GetInt32(0) == 0)
            {
                continue; // Stale snapshot: run it again, as the store does.
            }

            if (reader.GetInt32(0) == 1)
            {
                return null;
            }

            if (reader.GetString(1) != "completed")
            {
                throw new InvalidOperationException("in flight");
            }

            var headers = reader.GetFieldValue<string[]>(8);
            return new Stored(reader.GetInt32(7), headers.Length > 1 ? headers[1] : "", reader.GetFieldValue<byte[]>(9));
        }

        throw new InvalidOperationException("claim did not settle");
    }

    private async Task PostgresCompleteAsync(string key, Guid owner, string location, byte[] body)
    {
        await using var connection = await _dataSource!.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(_completeSql, connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
        command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = owner });
        command.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = Retention });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = StatusCodes.Status201Created });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = ["Location", location] });
        command.Parameters.Add(new NpgsqlParameter<ReadOnlyMemory<byte>> { TypedValue = body });
        command.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = false });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _channel });
        await command.PrepareAsync();
        await using var reader = await command.ExecuteReaderAsync();
        if (!await reader.ReadAsync())
        {
            throw new InvalidOperationException("fenced");
        }
    }

    // ---- Redis: the store's scripts with the store's parameters ----

    private RedisKey KeyFor(string key) => _prefix + "{" + key + "}";

    private async Task<Stored?> RedisClaimAsync(string key, Guid owner)
    {
        var result = await _redis!.GetDatabase().ScriptEvaluateAsync(_claimScript!, new
        {
            key = KeyFor(key),
            fingerprint = (RedisValue)Fingerprint,
            owner = (RedisValue)owner.ToString("N"),
            lease = (RedisValue)(long)Lease.TotalMilliseconds,
            retention = (RedisValue)(long)Retention.TotalMilliseconds,
            channel = (RedisValue)(RedisIdempotencyStoreOptions.DefaultKeyPrefix + "changed"),
            storeKey = (RedisValue)key,
            principal = (RedisValue)Metadata.PrincipalHash,
            operation = (RedisValue)Metadata.Operation,
        });
        var values = (RedisResult[])result!;
        if ((long)values[0] == 1)
        {
            return null;
        }

        if ((string?)values[1] != "2")
        {
            throw new InvalidOperationException("in flight");
        }

        return new Stored((int)values[6], Encoding.UTF8.GetString((byte[])values[7]!), (byte[])values[8]!);
    }

    private async Task RedisCompleteAsync(string key, Guid owner, string location, byte[] body)
    {
        var result = await _redis!.GetDatabase().ScriptEvaluateAsync(_completeScript!, new
        {
            key = KeyFor(key),
            owner = (RedisValue)owner.ToString("N"),
            retention = (RedisValue)(long)Retention.TotalMilliseconds,
            status = (RedisValue)StatusCodes.Status201Created,
            headers = (RedisValue)location,
            body = (RedisValue)body,
            omitted = (RedisValue)0,
            channel = (RedisValue)(RedisIdempotencyStoreOptions.DefaultKeyPrefix + "changed"),
            storeKey = (RedisValue)key,
        });
        if ((long)result != 1)
        {
            throw new InvalidOperationException("fenced");
        }
    }

    // ---- tiered: a cache read, then PostgreSQL; after a completion the cache write ----

    private async Task<Stored?> TieredClaimAsync(string key, Guid owner)
    {
        var cached = await _redis!.GetDatabase().HashGetAsync(KeyFor(key), CacheFields);
        if ((string?)cached[0] == "2")
        {
            return new Stored((int)cached[5], Encoding.UTF8.GetString((byte[])cached[6]!), (byte[])cached[7]!);
        }

        var stored = await PostgresClaimAsync(key, owner);
        if (stored is { } completed)
        {
            await CacheSetAsync(key, owner, completed.Location, completed.Body); // Read-through, as the tiered store does.
        }

        return stored;
    }

    private async Task CacheSetAsync(string key, Guid owner, string location, byte[] body)
    {
        var now = TimeProvider.System.GetUtcNow();
        await _redis!.GetDatabase().ScriptEvaluateAsync(_cacheSetScript!, new
        {
            key = KeyFor(key),
            fingerprint = (RedisValue)Fingerprint,
            owner = (RedisValue)owner.ToString("N"),
            lease = (RedisValue)now.ToUnixTimeMilliseconds(),
            expires = (RedisValue)(now + Retention).ToUnixTimeMilliseconds(),
            status = (RedisValue)StatusCodes.Status201Created,
            headers = (RedisValue)location,
            body = (RedisValue)body,
            omitted = (RedisValue)0,
        });
    }

    private static T Private<T>(object instance, string field) =>
        (T)(instance.GetType().GetField(field, BindingFlags.Instance | BindingFlags.NonPublic)?.GetValue(instance)
            ?? throw new MissingFieldException(instance.GetType().Name, field));

    private static T StaticPrivate<T>(Type type, string field) =>
        (T)(type.GetField(field, BindingFlags.Static | BindingFlags.NonPublic)?.GetValue(null)
            ?? throw new MissingFieldException(type.Name, field));

    private readonly record struct Stored(int Status, string Location, byte[] Body);
}
