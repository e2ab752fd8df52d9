using System.Globalization;
using Idem.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Transforms;

namespace Idem.Gateway;

/// <summary>
/// Composes Idem Gateway: YARP routes and clusters (or one <c>--upstream</c>), Idem's middleware with a policy per
/// route, the configured store, <c>/healthz</c>, Prometheus <c>/metrics</c>, correlation ids and graceful shutdown.
/// Used by <c>dotnet run</c>, by <c>idem gateway</c> and by tests, which start it in-process on port 0.
/// </summary>
public static partial class GatewayHost
{
    /// <summary>The route id of the <c>--upstream</c> quick start's catch-all route.</summary>
    public const string QuickStartRouteId = "default";

    /// <summary>The URL the gateway listens on when neither <c>--urls</c>, <c>ASPNETCORE_URLS</c> nor <c>HTTP_PORTS</c> is set.</summary>
    public const string DefaultUrls = "http://localhost:8080";

    private static readonly Dictionary<string, string> SwitchMappings = new(StringComparer.Ordinal)
    {
        ["--upstream"] = "Idem:Upstream",
    };

    // Lowest-precedence defaults: structured (JSON) logs with scopes, so every line carries the request id, and no
    // per-request Information logs from the framework or YARP on the hot path. ASP.NET Core's hosting diagnostics
    // logger is off: while it is enabled, hosting starts an Activity and a log scope for every request even when
    // nothing traces, which cost the gateway about 6 % of its throughput; the gateway opens its own scope with the
    // correlation id instead, and an OpenTelemetry tracer (an ActivityListener) still gets its activities.
    private static readonly Dictionary<string, string?> Defaults = new(StringComparer.OrdinalIgnoreCase)
    {
        ["Logging:LogLevel:Default"] = "Information",
        ["Logging:LogLevel:Microsoft.AspNetCore"] = "Warning",
        ["Logging:LogLevel:Microsoft.AspNetCore.Hosting.Diagnostics"] = "None",
        ["Logging:LogLevel:Yarp"] = "Warning",
        ["Logging:Console:FormatterName"] = "json",
        ["Logging:Console:FormatterOptions:IncludeScopes"] = "true",
    };

    /// <summary>Builds the gateway from <paramref name="args"/> and the standard configuration sources, without starting it.</summary>
    /// <param name="args">Command-line arguments: <c>--upstream URL</c>, <c>--urls</c>, and any <c>--Idem:…</c> or <c>--ReverseProxy:…</c> setting.</param>
    /// <param name="configure">Adjusts the builder after the gateway's own registrations (tests replace services here).</param>
    /// <returns>The application, ready for <c>RunAsync</c> or <c>StartAsync</c>.</returns>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(args);
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args });
        builder.Configuration.Sources.Insert(0, new Microsoft.Extensions.Configuration.Memory.MemoryConfigurationSource { InitialData = Defaults });
        builder.Configuration.AddCommandLine(args, SwitchMappings);

        var gateway = new GatewayOptions();
        var section = builder.Configuration.GetSection(GatewayOptions.SectionName);
        if (section[nameof(GatewayOptions.Store)] is { Length: > 0 } store && !Enum.TryParse<GatewayStoreKind>(store, ignoreCase: true, out _))
        {
            // The binder's own error would name an internal .NET type; say which values exist instead.
            throw new InvalidOperationException($"Unknown Idem:Store '{store}'; use one of {string.Join(", ", Enum.GetNames<GatewayStoreKind>())}.");
        }

        section.Bind(gateway);
        gateway.Validate();
        builder.Services.AddSingleton(gateway);

        ConfigureUrls(builder, gateway);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = gateway.ShutdownTimeout);

        var idem = builder.Services.AddIdempotency(o =>
        {
            o.HeaderName = gateway.HeaderName;
            o.CorrelationIdHeader = gateway.CorrelationIdHeader;
            o.MaxRequestBodyBytes = gateway.MaxRequestBodyBytes;
            o.RequestBufferThreshold = gateway.RequestBufferThreshold;
            o.CanonicalJsonFingerprint = gateway.CanonicalJsonFingerprint;
            o.PurgeInterval = gateway.PurgeInterval;
            o.PrincipalResolver = GatewayPrincipal.Create(gateway.Principal);
        });
        GatewayStores.Use(idem, gateway, builder.Environment.ContentRootPath);

        builder.Services.AddHealthChecks().AddIdempotencyStore();
        builder.Services.AddOpenTelemetry().WithMetrics(m => m
            .AddMeter(IdempotencyMetrics.MeterName)
            .AddPrometheusExporter());

        builder.Services.AddSingleton<GatewayDrain>();
        builder.Services.AddHostedService(static sp => sp.GetRequiredService<GatewayDrain>());

        var proxy = builder.Services.AddReverseProxy();
        if (gateway.Upstream is not null)
        {
            proxy.LoadFromMemory(
                [new RouteConfig { RouteId = QuickStartRouteId, ClusterId = "upstream", Match = new RouteMatch { Path = "{**catch-all}" } }],
                [new ClusterConfig { ClusterId = "upstream", Destinations = new Dictionary<string, DestinationConfig> { ["upstream"] = new() { Address = gateway.Upstream } } }]);
        }
        else if (builder.Configuration.GetSection("ReverseProxy:Routes").Exists())
        {
            proxy.LoadFromConfig(builder.Configuration.GetSection("ReverseProxy"));
        }
        else
        {
            throw new InvalidOperationException(
                "Idem Gateway has nowhere to forward to: pass --upstream http://host:port (or set Idem__Upstream), " +
                "or configure YARP routes and clusters under ReverseProxy:Routes and ReverseProxy:Clusters.");
        }

        var correlationHeader = gateway.CorrelationIdHeader;
        proxy.AddTransforms(transforms =>
        {
            // The id goes upstream with the request's other headers (the gateway rewrote the incoming one), so the
            // API's logs and the gateway's share it; the answer carries it back, whatever the upstream echoed.
            transforms.AddResponseTransform(t =>
            {
                t.HttpContext.Response.Headers[correlationHeader] = t.HttpContext.Request.Headers[correlationHeader];
                return ValueTask.CompletedTask;
            });
        });

        configure?.Invoke(builder);

        var app = builder.Build();
        Configure(app, gateway);
        return app;
    }

    /// <summary>Builds and runs the gateway until it is stopped (Ctrl+C, SIGTERM).</summary>
    /// <param name="args">See <see cref="Build"/>.</param>
    /// <param name="cancellationToken">Stops the gateway.</param>
    /// <returns>The process exit code: 0 after a clean stop, 1 when the configuration is invalid.</returns>
    public static async Task<int> RunAsync(string[] args, CancellationToken cancellationToken = default)
    {
        WebApplication app;
        try
        {
            app = Build(args);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or ArgumentException)
        {
            await Console.Error.WriteLineAsync($"idem gateway: {ex.Message}").ConfigureAwait(false);
            return 1;
        }

        await using (app.ConfigureAwait(false))
        {
            try
            {
                await app.RunAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is Microsoft.Extensions.Options.OptionsValidationException or InvalidOperationException)
            {
                await Console.Error.WriteLineAsync($"idem gateway: {ex.Message}").ConfigureAwait(false);
                return 1;
            }
        }

        return 0;
    }

    private static void ConfigureUrls(WebApplicationBuilder builder, GatewayOptions gateway)
    {
        var config = builder.Configuration;
        var urls = config[WebHostDefaults.ServerUrlsKey];
        var portsSet = !string.IsNullOrEmpty(config[WebHostDefaults.HttpPortsKey]) || !string.IsNullOrEmpty(config[WebHostDefaults.HttpsPortsKey]);
        if (string.IsNullOrEmpty(urls) && !portsSet)
        {
            urls = DefaultUrls; // not ASP.NET Core's :5000, which is where the API being protected often runs
        }

        if (!string.IsNullOrWhiteSpace(gateway.ManagementUrls))
        {
            if (string.IsNullOrEmpty(urls))
            {
                throw new InvalidOperationException("Idem:ManagementUrls needs the main URLs in --urls or ASPNETCORE_URLS (not HTTP_PORTS).");
            }

            builder.WebHost.UseUrls($"{urls};{gateway.ManagementUrls}");
        }
        else if (urls is not null)
        {
            builder.WebHost.UseUrls(urls);
        }
    }

    private static void Configure(WebApplication app, GatewayOptions gateway)
    {
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Idem.Gateway");
        var managementPorts = ManagementPorts(gateway.ManagementUrls);
        var correlationHeader = gateway.CorrelationIdHeader;

        app.Use(async (context, next) =>
        {
            // Management ports serve /healthz and /metrics only; the API is not reachable through them.
            if (managementPorts.Count > 0
                && managementPorts.Contains(context.Connection.LocalPort)
                && !context.Request.Path.StartsWithSegments("/healthz", StringComparison.OrdinalIgnoreCase)
                && !context.Request.Path.StartsWithSegments("/metrics", StringComparison.OrdinalIgnoreCase))
            {
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return;
            }

            // One correlation id per request: the gateway's logs carry it (this scope), Idem's middleware echoes it,
            // and it goes upstream as the request's header.
            var correlation = RequestCorrelation.Accept(context, correlationHeader);
            context.Request.Headers[correlationHeader] = correlation.RequestId;
            using (correlation.BeginLogScope(logger))
            {
                await next(context).ConfigureAwait(false);
            }
        });

        if (managementPorts.Count > 0)
        {
            // Decided by the port the connection arrived on (not the Host header, which the client chooses).
            app.UseOpenTelemetryPrometheusScrapingEndpoint(context =>
                managementPorts.Contains(context.Connection.LocalPort)
                && context.Request.Path.StartsWithSegments("/metrics", StringComparison.OrdinalIgnoreCase));
        }

        app.UseRouting();
        app.UseIdempotency();

        app.MapHealthChecks("/healthz");
        if (managementPorts.Count == 0)
        {
            app.MapPrometheusScrapingEndpoint("/metrics");
        }

        var policies = new GatewayRoutePolicies(gateway);
        app.MapReverseProxy(pipeline =>
        {
            pipeline.UseMiddleware<GatewayForwardingMiddleware>();
            pipeline.UseSessionAffinity();
            pipeline.UseLoadBalancing();
            pipeline.UsePassiveHealthChecks();
        }).ConfigureEndpoints((endpoint, route) =>
        {
            if (policies.For(route) is { } options)
            {
                var metadata = new GatewayRouteMetadata(options);
                endpoint.Add(b => b.Metadata.Add(metadata));
            }
        });

        // Fail at startup, not on the first request, when a route's Idem settings are invalid; and say what is protected.
        foreach (var provider in app.Services.GetServices<IProxyConfigProvider>())
        {
            foreach (var route in provider.GetConfig().Routes)
            {
                var options = policies.For(route);
                LogRoute(logger, route.RouteId, options is null ? "not protected" : Describe(options, app.Services));
            }
        }
    }

    private static string Describe(IdempotencyEndpointOptions o, IServiceProvider services)
    {
        var app = services.GetRequiredService<Microsoft.Extensions.Options.IOptions<IdempotencyOptions>>().Value;
        var methods = string.Join(",", o.Methods ?? (IEnumerable<string>)app.Methods);
        var key = (o.RequireKey ?? app.RequireKey) ? "key required" : "key optional";
        var implicitKeys = o.ImplicitKeyWindow is { } w ? $", implicit keys for {w}" : string.Empty;
        return $"{methods}, {key}, {o.ConflictBehavior ?? app.DefaultPolicy.ConflictBehavior} on conflict, retention {o.Retention ?? app.DefaultPolicy.Retention}{implicitKeys}";
    }

    private static HashSet<int> ManagementPorts(string? urls)
    {
        var ports = new HashSet<int>();
        if (string.IsNullOrWhiteSpace(urls))
        {
            return ports;
        }

        foreach (var url in urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var normalized = url.Replace("://*", "://localhost", StringComparison.Ordinal).Replace("://+", "://localhost", StringComparison.Ordinal);
            if (!Uri.TryCreate(normalized, UriKind.Absolute, out var uri) || uri.Port <= 0)
            {
                throw new InvalidOperationException($"Idem:ManagementUrls: '{url}' needs an explicit, non-zero port.");
            }

            ports.Add(uri.Port);
        }

        return ports;
    }

    [LoggerMessage(5000, LogLevel.Information, "Route {RouteId}: {Protection}.", EventName = "Route")]
    private static partial void LogRoute(ILogger logger, string routeId, string protection);
}

/// <summary>Resolves (and validates) each YARP route's Idem settings once.</summary>
internal sealed class GatewayRoutePolicies(GatewayOptions gateway)
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<RouteConfig, IdempotencyEndpointOptions?> _cache = new();

    /// <summary>The route's settings, or <see langword="null"/> when the route is not protected.</summary>
    public IdempotencyEndpointOptions? For(RouteConfig route) => _cache.GetOrAdd(route, r =>
    {
        var options = gateway.Default
            .Overlay(RouteMetadata.Read(r.RouteId, r.Metadata))
            .Overlay(gateway.Routes.GetValueOrDefault(r.RouteId));
        if (options.Enabled == false)
        {
            return null;
        }

        options.Methods = RouteMetadata.NormalizeMethods(options.Methods);
        try
        {
            options.Validate();
        }
        catch (ArgumentException ex)
        {
            throw new InvalidOperationException($"Invalid Idem settings for route '{r.RouteId}': {ex.Message}", ex);
        }

        return options;
    });
}

/// <summary>Marks a proxied route as protected, with its settings.</summary>
internal sealed class GatewayRouteMetadata(IdempotencyEndpointOptions options) : IIdempotencyEndpointMetadata
{
    public IdempotencyEndpointOptions Options { get; } = options;
}
