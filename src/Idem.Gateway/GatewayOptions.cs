using Idem.AspNetCore;
using Microsoft.Extensions.Configuration;

namespace Idem.Gateway;

/// <summary>The store that keeps the gateway's idempotency records (<c>Idem:Store</c>).</summary>
internal enum GatewayStoreKind
{
    /// <summary>An embedded SQLite file (<c>Idem:Sqlite:Path</c>): one node, durable, zero setup. The default.</summary>
    Sqlite,

    /// <summary>PostgreSQL (<c>Idem:PostgreSql:ConnectionString</c>): many gateway nodes share one authority.</summary>
    PostgreSql,

    /// <summary>Process memory: tests and throwaway setups; records are lost on restart.</summary>
    InMemory,

    /// <summary>Redis (<c>Idem:Redis:Configuration</c>): many gateway nodes, fastest; as durable as the Redis server is configured to be.</summary>
    Redis,

    /// <summary>Redis in front of PostgreSQL (<c>Idem:PostgreSql:*</c> and <c>Idem:Redis:*</c>): claims in PostgreSQL, replays read through Redis.</summary>
    Tiered,
}

/// <summary>The <c>Idem</c> configuration section of the gateway.</summary>
internal sealed class GatewayOptions
{
    public const string SectionName = "Idem";

    /// <summary>One-flag quick start: a catch-all route to this upstream instead of <c>ReverseProxy:Routes/Clusters</c>.</summary>
    public string? Upstream { get; set; }

    public GatewayStoreKind Store { get; set; } = GatewayStoreKind.Sqlite;

    public SqliteSection Sqlite { get; set; } = new();

    public PostgreSqlSection PostgreSql { get; set; } = new();

    public RedisSection Redis { get; set; } = new();

    public PrincipalSection Principal { get; set; } = new();

    /// <summary>Extra URLs (e.g. <c>http://127.0.0.1:9090</c>) that serve <c>/metrics</c> and <c>/healthz</c> only.</summary>
    public string? ManagementUrls { get; set; }

    /// <summary>How long in-flight requests may take to finish when the gateway stops.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public string HeaderName { get; set; } = "Idempotency-Key";

    public string CorrelationIdHeader { get; set; } = "X-Request-Id";

    public long MaxRequestBodyBytes { get; set; } = 10 * 1024 * 1024;

    public int RequestBufferThreshold { get; set; } = 64 * 1024;

    public bool CanonicalJsonFingerprint { get; set; }

    public TimeSpan PurgeInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Policy of every route; <c>Idem:Routes:&lt;routeId&gt;</c> and route metadata override it.</summary>
    public IdempotencyEndpointOptions Default { get; set; } = new();

    public Dictionary<string, IdempotencyEndpointOptions> Routes { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    public sealed class SqliteSection
    {
        public string Path { get; set; } = "idem.db";
    }

    public sealed class PostgreSqlSection
    {
        public string? ConnectionString { get; set; }

        /// <summary>Whether the gateway creates (and upgrades) its table on first use; turn off where its user may not run DDL.</summary>
        public bool CreateSchema { get; set; } = true;
    }

    public sealed class RedisSection
    {
        /// <summary>A StackExchange.Redis configuration string, e.g. <c>redis:6379,password=…</c>.</summary>
        public string? Configuration { get; set; }

        /// <summary>The key prefix; <c>idem:</c> for the Redis store, <c>idem-cache:</c> for the tiered store's cache when empty.</summary>
        public string? KeyPrefix { get; set; }

        /// <summary>The deadline of each Redis call (default 2 s).</summary>
        public TimeSpan? OperationTimeout { get; set; }
    }

    public sealed class PrincipalSection
    {
        /// <summary>The request header whose value identifies the caller; <c>Authorization</c> unless a cookie is named.</summary>
        public string? Header { get; set; }

        /// <summary>A cookie whose value identifies the caller (a session cookie), instead of a header.</summary>
        public string? Cookie { get; set; }
    }

    public void Validate()
    {
        if (Upstream is not null && (!Uri.TryCreate(Upstream, UriKind.Absolute, out var upstream) || (upstream.Scheme != Uri.UriSchemeHttp && upstream.Scheme != Uri.UriSchemeHttps)))
        {
            throw new InvalidOperationException($"Idem:Upstream (--upstream) must be an absolute http:// or https:// URL; got '{Upstream}'.");
        }

        if (!Enum.IsDefined(Store))
        {
            throw new InvalidOperationException($"Unknown Idem:Store; use one of {string.Join(", ", Enum.GetNames<GatewayStoreKind>())}.");
        }

        if (Principal.Header is not null && Principal.Cookie is not null)
        {
            throw new InvalidOperationException("Set Idem:Principal:Header or Idem:Principal:Cookie, not both.");
        }

        if (ShutdownTimeout <= TimeSpan.Zero)
        {
            throw new InvalidOperationException("Idem:ShutdownTimeout must be positive.");
        }
    }
}

/// <summary>
/// Per-route Idem settings are <see cref="IdempotencyEndpointOptions"/>, from <c>Idem:Default</c>,
/// <c>Idem:Routes:&lt;routeId&gt;</c> or YARP route metadata <c>Idem.&lt;Name&gt;</c>; this reads the metadata form.
/// </summary>
internal static class RouteMetadata
{
    /// <summary>Reads YARP route metadata entries named <c>Idem.&lt;Name&gt;</c> (or <c>Idem:&lt;Name&gt;</c>).</summary>
    public static IdempotencyEndpointOptions? Read(string routeId, IReadOnlyDictionary<string, string>? metadata)
    {
        if (metadata is null)
        {
            return null;
        }

        var values = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, value) in metadata)
        {
            if (name.StartsWith("Idem.", StringComparison.OrdinalIgnoreCase) || name.StartsWith("Idem:", StringComparison.OrdinalIgnoreCase))
            {
                values[name[5..]] = value;
            }
        }

        if (values.Count == 0)
        {
            return null;
        }

        // Methods may be written "POST,PUT" in a metadata string.
        const string methodsName = nameof(IdempotencyEndpointOptions.Methods);
        if (values.TryGetValue(methodsName, out var methods) && methods is not null)
        {
            values.Remove(methodsName);
            var i = 0;
            foreach (var method in methods.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                values[$"{methodsName}:{i++}"] = method;
            }
        }

        var options = new IdempotencyEndpointOptions();
        try
        {
            new ConfigurationBuilder().AddInMemoryCollection(values).Build().Bind(options, o => o.ErrorOnUnknownConfiguration = true);
        }
        catch (InvalidOperationException ex)
        {
            throw new InvalidOperationException($"Invalid Idem metadata on YARP route '{routeId}': {ex.Message}", ex);
        }

        return options;
    }

    /// <summary>Methods from configuration may be comma separated ("POST,PUT") and in any case; the middleware wants names.</summary>
    public static IReadOnlyCollection<string>? NormalizeMethods(IReadOnlyCollection<string>? methods)
    {
        var names = methods?
            .SelectMany(static m => m.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            .Select(static m => m.ToUpperInvariant())
            .ToArray();
        return names is { Length: > 0 } ? names : null;
    }
}
