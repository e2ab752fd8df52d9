using System.CommandLine;
using Idem.PostgreSql;
using Idem.Redis;
using Idem.Sqlite;

namespace Idem.Cli.Common;

/// <summary>The kinds of store the tool connects to.</summary>
internal enum StoreKind
{
    Sqlite,
    PostgreSql,
    Redis,
    Tiered,
}

/// <summary>
/// The store flags every store command shares (<c>--store --connection --redis --table --schema --key-prefix</c>), and
/// the stores they open: the packages' own store classes, so the tool runs the same code as the application.
/// </summary>
internal sealed class StoreOptions
{
    public const string ConnectionVariable = "IDEM_CONNECTION";
    public const string RedisVariable = "IDEM_REDIS";

    public StoreOptions(bool required)
    {
        Store = new Option<StoreKind?>("--store")
        {
            Description = "The store: sqlite, postgresql, redis, or tiered (claims in PostgreSQL, replays read through Redis). Example: --store postgresql",
            Required = required,
            CustomParser = result => ParseKind(result.Tokens.Single().Value, result),
            HelpName = "sqlite|postgresql|redis|tiered",
        };
        Connection = new Option<string?>("--connection", "-c")
        {
            Description = $"The store's connection: a SQLite file path or connection string, a PostgreSQL connection string (tiered: the PostgreSQL one), or a Redis configuration. Defaults to ${ConnectionVariable}, which keeps the password out of the process list; printed masked. Example: --connection \"Host=db;Username=idem;Password=…;Database=idem\"",
        };
        Redis = new Option<string?>("--redis")
        {
            Description = $"The tiered store's Redis cache (a StackExchange.Redis configuration). Defaults to ${RedisVariable}. Example: --redis \"cache:6379,password=…\"",
        };
        Table = new Option<string>("--table")
        {
            Description = "The store's table (SQL stores). Example: --table idem_records",
            DefaultValueFactory = _ => "idem_records",
        };
        Schema = new Option<string>("--schema")
        {
            Description = "The PostgreSQL schema holding the table. Example: --schema public",
            DefaultValueFactory = _ => "public",
        };
        KeyPrefix = new Option<string?>("--key-prefix")
        {
            Description = $"The Redis key prefix of the store (default {RedisIdempotencyStoreOptions.DefaultKeyPrefix}) or, for tiered, of the cache (default {RedisIdempotencyStoreOptions.DefaultCacheKeyPrefix}). Example: --key-prefix idem:",
        };
    }

    public Option<StoreKind?> Store { get; }

    public Option<string?> Connection { get; }

    public Option<string?> Redis { get; }

    public Option<string> Table { get; }

    public Option<string> Schema { get; }

    public Option<string?> KeyPrefix { get; }

    public IEnumerable<Option> All => [Store, Connection, Redis, Table, Schema, KeyPrefix];

    public void AddTo(Command command)
    {
        foreach (var option in All)
        {
            command.Options.Add(option);
        }
    }

    /// <summary>The raw secrets given, so error messages that quote them can be masked.</summary>
    public string?[] SecretsOf(ParseResult parseResult) => [ConnectionOf(parseResult), RedisOf(parseResult)];

    public string? ConnectionOf(ParseResult parseResult) =>
        parseResult.GetValue(Connection) ?? NullIfEmpty(Environment.GetEnvironmentVariable(ConnectionVariable));

    public string? RedisOf(ParseResult parseResult) =>
        parseResult.GetValue(Redis) ?? NullIfEmpty(Environment.GetEnvironmentVariable(RedisVariable));

    /// <summary>Opens the chosen store. A SQLite file must exist unless <paramref name="mayCreate"/> (only <c>migrate</c> creates one).</summary>
    public OpenStore Open(ParseResult parseResult, bool mayCreate = false)
    {
        var kind = parseResult.GetValue(Store) ?? throw new UsageException("--store is required (sqlite, postgresql, redis or tiered).");
        var connection = ConnectionOf(parseResult)
            ?? throw new UsageException($"--connection is required (or set ${ConnectionVariable}).");
        var table = parseResult.GetValue(Table)!;
        var schema = parseResult.GetValue(Schema)!;
        var prefix = parseResult.GetValue(KeyPrefix);
        switch (kind)
        {
            case StoreKind.Sqlite:
            {
                var options = connection.Contains('=', StringComparison.Ordinal)
                    ? new SqliteIdempotencyStoreOptions { ConnectionString = connection, TableName = table }
                    : new SqliteIdempotencyStoreOptions { Path = connection, TableName = table };
                var path = options.Path ?? new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(connection).DataSource;
                if (!mayCreate && !File.Exists(path))
                {
                    throw new UsageException($"no SQLite database at '{Path.GetFullPath(path)}' (nothing was created; `idem migrate` creates one).");
                }

                var store = new SqliteIdempotencyStore(options);
                return new OpenStore(kind, store, store, [new StoreTier("sqlite", store, IsCache: false)], $"sqlite {Secrets.Redact(connection)}", [store]);
            }

            case StoreKind.PostgreSql:
            {
                var store = new PostgreSqlIdempotencyStore(PostgreSqlOptions(connection, schema, table));
                return new OpenStore(kind, store, store, [new StoreTier("postgresql", store, IsCache: false)], $"postgresql {Secrets.Redact(connection)}", [store]);
            }

            case StoreKind.Redis:
            {
                var store = new RedisIdempotencyStore(new RedisIdempotencyStoreOptions { Configuration = WithAdmin(connection), KeyPrefix = prefix ?? RedisIdempotencyStoreOptions.DefaultKeyPrefix });
                return new OpenStore(kind, store, store, [new StoreTier("redis", store, IsCache: false)], $"redis {Secrets.Redact(connection)}", [store]);
            }

            case StoreKind.Tiered:
            {
                var redis = RedisOf(parseResult) ?? throw new UsageException($"--store tiered needs --redis (or ${RedisVariable}) for its cache.");
                var durable = new PostgreSqlIdempotencyStore(PostgreSqlOptions(connection, schema, table));
                var cache = new RedisIdempotencyResponseCache(new RedisIdempotencyStoreOptions { Configuration = WithAdmin(redis), KeyPrefix = prefix ?? RedisIdempotencyStoreOptions.DefaultCacheKeyPrefix });
                var tiered = new TieredIdempotencyStore(durable, cache);
                return new OpenStore(
                    kind,
                    tiered,
                    tiered,
                    [new StoreTier("postgresql", durable, IsCache: false), new StoreTier("redis-cache", cache, IsCache: true)],
                    $"tiered postgresql {Secrets.Redact(connection)} + redis {Secrets.Redact(redis)}",
                    [tiered, cache, durable]);
            }

            default:
                throw new UsageException($"unknown store '{kind}'.");
        }
    }

    // CONFIG GET (eviction policy, persistence) is an admin command to StackExchange.Redis; the tool only reads with it.
    private static string WithAdmin(string configuration)
    {
        var options = StackExchange.Redis.ConfigurationOptions.Parse(configuration);
        options.AllowAdmin = true;
        return options.ToString(includePassword: true);
    }

    private static PostgreSqlIdempotencyStoreOptions PostgreSqlOptions(string connection, string schema, string table)
    {
        var options = new PostgreSqlIdempotencyStoreOptions { ConnectionString = connection, SchemaName = schema, TableName = table };
        try
        {
            options.Validate();
        }
        catch (InvalidOperationException ex)
        {
            throw new UsageException(ex.Message);
        }

        return options;
    }

    private static StoreKind? ParseKind(string value, System.CommandLine.Parsing.ArgumentResult result)
    {
        switch (value.ToLowerInvariant())
        {
            case "sqlite":
                return StoreKind.Sqlite;
            case "postgresql" or "postgres" or "pg":
                return StoreKind.PostgreSql;
            case "redis":
                return StoreKind.Redis;
            case "tiered":
                return StoreKind.Tiered;
            default:
                result.AddError($"--store '{value}' is not one of sqlite, postgresql, redis, tiered.");
                return null;
        }
    }

    private static string? NullIfEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;
}

/// <summary>One tier of an opened store (the store itself, or the durable store and the cache of a tiered one).</summary>
internal sealed record StoreTier(string Name, IIdempotencyStoreAdmin Admin, bool IsCache);

/// <summary>An opened store: the store, its administration, its tiers, a masked description; disposes what it opened.</summary>
internal sealed class OpenStore(StoreKind kind, IIdempotencyStore store, IIdempotencyStoreAdmin admin, IReadOnlyList<StoreTier> tiers, string description, IReadOnlyList<object> owned) : IAsyncDisposable
{
    public StoreKind Kind => kind;

    public IIdempotencyStore Store => store;

    public IIdempotencyStoreAdmin Admin => admin;

    public IReadOnlyList<StoreTier> Tiers => tiers;

    /// <summary>What was opened, with secrets masked.</summary>
    public string Description => description;

    public async ValueTask DisposeAsync()
    {
        foreach (var part in owned)
        {
            if (part is IAsyncDisposable asyncDisposable)
            {
                await asyncDisposable.DisposeAsync().ConfigureAwait(false);
            }
            else
            {
                (part as IDisposable)?.Dispose();
            }
        }
    }
}
