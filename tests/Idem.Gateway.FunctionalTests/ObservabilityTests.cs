using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Idem.TestUtils;

namespace Idem.Gateway.FunctionalTests;

/// <summary>
/// Health by tier under real outages (Redis killed, PostgreSQL frozen with SIGSTOP), and the observability pack in
/// <c>deploy/</c> against what a running gateway really exports on <c>/metrics</c>.
/// </summary>
public sealed partial class ObservabilityTests
{
    [Fact]
    public async Task Health_by_tier_follows_real_Redis_and_PostgreSQL_outages()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var postgres = await PostgreSqlServer.StartPrivateAsync();
        await using var redis = await RedisServer.StartPrivateAsync();
        try
        {
            await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address, TieredArgs(postgres, redis));

            var (status, report) = await HealthAsync(gateway, "/healthz");
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal("Healthy", report.GetProperty("status").GetString());
            var data = StoreData(report);
            Assert.Equal("Healthy", data.GetProperty("durable.status").GetString());
            Assert.Equal("Healthy", data.GetProperty("cache.status").GetString());
            Assert.True(data.GetProperty("durable.latency_ms").GetDouble() >= 0);
            Assert.True(data.GetProperty("cache.latency_ms").GetDouble() >= 0);
            Assert.False(data.GetProperty("cache.fallback_active").GetBoolean());
            Assert.Equal(HttpStatusCode.OK, (await HealthAsync(gateway, "/healthz/ready")).Status);
            Assert.Equal(HttpStatusCode.OK, (await HealthAsync(gateway, "/healthz/live")).Status);

            // Redis dies: the tiered store falls back to PostgreSQL. Degraded, still ready (200), and requests still work.
            await redis.KillAsync();
            Assert.Equal(HttpStatusCode.Created, (await gateway.Client.SendAsync(Http.Post("/orders", Http.NewKey()))).StatusCode);
            (status, report) = await HealthAsync(gateway, "/healthz");
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal("Degraded", report.GetProperty("status").GetString());
            data = StoreData(report);
            Assert.Equal("Healthy", data.GetProperty("durable.status").GetString());
            Assert.Equal("Unhealthy", data.GetProperty("cache.status").GetString());
            Assert.True(data.GetProperty("cache.fallback_active").GetBoolean());
            Assert.False(string.IsNullOrEmpty(data.GetProperty("cache.last_error").GetString()));
            Assert.True(data.TryGetProperty("cache.fallback_since", out _));
            var (readyStatus, ready) = await HealthAsync(gateway, "/healthz/ready");
            Assert.Equal(HttpStatusCode.OK, readyStatus);
            Assert.Equal("Degraded", ready.GetProperty("status").GetString());

            // PostgreSQL freezes (SIGSTOP): the durable tier cannot answer. Unhealthy (503) and not ready, but alive.
            await postgres.SetFrozenAsync(true);
            (status, report) = await HealthAsync(gateway, "/healthz");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
            Assert.Equal("Unhealthy", report.GetProperty("status").GetString());
            data = StoreData(report);
            Assert.Equal("Unhealthy", data.GetProperty("durable.status").GetString());
            Assert.Contains("No answer within", data.GetProperty("durable.last_error").GetString());
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await HealthAsync(gateway, "/healthz/ready")).Status);
            var (liveStatus, live) = await HealthAsync(gateway, "/healthz/live");
            Assert.Equal(HttpStatusCode.OK, liveStatus);
            Assert.Empty(live.GetProperty("checks").EnumerateObject());

            // PostgreSQL thaws: ready again, still degraded while Redis is gone.
            await postgres.SetFrozenAsync(false);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            do
            {
                (readyStatus, ready) = await HealthAsync(gateway, "/healthz/ready");
            }
            while (readyStatus != HttpStatusCode.OK && DateTime.UtcNow < deadline);

            Assert.Equal(HttpStatusCode.OK, readyStatus);
            Assert.Equal("Degraded", ready.GetProperty("status").GetString());
        }
        finally
        {
            await postgres.SetFrozenAsync(false);
        }
    }

    [Fact]
    public async Task Every_metric_the_alert_rules_and_the_dashboard_name_is_exported_by_a_running_gateway()
    {
        var names = MetricNamesInDeploy();
        Assert.Contains("idem_cache_fallback", names);
        Assert.Contains("idem_requests_total", names);

        await using var upstream = await CountingUpstream.StartAsync();
        await using var postgres = await PostgreSqlServer.StartPrivateAsync();
        await using var redis = await RedisServer.StartPrivateAsync();
        string[] args = [.. TieredArgs(postgres, redis), "--Idem:Default:StoreFailureMode", "FailOpen", "--Idem:Default:MaxStoredBodyBytes", "16"];
        await using var gateway = await GatewayUnderTest.StartAsync(upstream.Address, args);

        // Drive every path the rules watch: an execution, a replay of a response too large to keep (409 not retained),
        // a cache outage (fallback), and a durable-store outage on a fail-open route (store errors, unprotected).
        var key = Http.NewKey();
        Assert.Equal(HttpStatusCode.Created, (await gateway.Client.SendAsync(Http.Post("/orders", key))).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await gateway.Client.SendAsync(Http.Post("/orders", key))).StatusCode);
        await redis.KillAsync();
        Assert.Equal(HttpStatusCode.Created, (await gateway.Client.SendAsync(Http.Post("/orders", Http.NewKey()))).StatusCode);
        await postgres.StopAsync();
        Assert.Equal(HttpStatusCode.Created, (await gateway.Client.SendAsync(Http.Post("/orders", Http.NewKey()))).StatusCode);

        var exported = await ScrapeAsync(gateway, "idem_requests_total{", "idem_outcome=\"unprotected\"");
        var missing = Missing(names, exported);
        Assert.True(missing.Count == 0, $"The deploy pack names metrics the gateway does not export: {string.Join(", ", missing)}.\n{exported}");

        // The dashboard's names read from its PromQL (not only those starting with idem_), against the same scrape.
        var dashboardMissing = Missing(GrafanaDashboardTests.DashboardMetricNames(), exported);
        Assert.True(dashboardMissing.Count == 0, $"The Grafana dashboard queries metrics the gateway does not export: {string.Join(", ", dashboardMissing)}.");

        // The check can fail: a name the app does not emit is reported.
        Assert.Equal(["idem_claims_total"], Missing(["idem_claims_total", "idem_requests_total"], exported));
        Assert.Contains("idem_cache_fallback{", exported);
        Assert.Matches(@"idem_cache_fallback\{[^}]*\} 1", exported);
        Assert.Contains("le=\"0.0005\"", exported); // the claim histogram's own second-scale buckets
    }

    [Fact]
    public void Every_alert_has_a_runbook_section_with_meaning_confirmation_and_action_and_links_to_it()
    {
        var root = RepositoryRoot();
        var rules = File.ReadAllText(Path.Combine(root, "deploy", "prometheus", "idem-alerts.yml"));
        var runbook = File.ReadAllText(Path.Combine(root, "docs", "runbook.md"));
        var alerts = AlertName().Matches(rules).Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(5, alerts.Count);
        var sections = runbook.Split("\n## ").Skip(1).ToDictionary(s => s[..s.IndexOf('\n')].Trim(), s => s);
        foreach (var alert in alerts)
        {
            Assert.True(sections.TryGetValue(alert, out var section), $"docs/runbook.md has no section '## {alert}'.");
            Assert.Contains("**Meaning.**", section);
            Assert.Contains("**Confirm.**", section);
            Assert.Contains("idem doctor", section);
            Assert.Contains("**What to do.**", section);
            Assert.Contains($"runbook: \"docs/runbook.md#{alert.ToLowerInvariant()}\"", rules);
        }

        using var dashboard = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "deploy", "grafana", "idem-dashboard.json")));
        Assert.NotEmpty(dashboard.RootElement.GetProperty("panels").EnumerateArray());
    }

    internal static string[] TieredArgs(PostgreSqlServer postgres, RedisServer redis) =>
    [
        "--Idem:Store", "Tiered", "--Idem:PostgreSql:ConnectionString", postgres.ConnectionString,
        "--Idem:Redis:Configuration", redis.Endpoint, "--Idem:Redis:OperationTimeout", "00:00:01",
    ];

    /// <summary>The <c>idem_…</c> metric names in the alert rules and the Grafana dashboard, histogram suffixes included.</summary>
    internal static SortedSet<string> MetricNamesInDeploy()
    {
        var root = RepositoryRoot();
        var rules = File.ReadAllText(Path.Combine(root, "deploy", "prometheus", "idem-alerts.yml"));
        var dashboard = File.ReadAllText(Path.Combine(root, "deploy", "grafana", "idem-dashboard.json"));
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var text in new[] { rules, dashboard })
        {
            foreach (Match m in MetricName().Matches(text))
            {
                if (m.Value is not ("idem_outcome" or "idem_operation")) // label names, not metrics
                {
                    names.Add(m.Value);
                }
            }
        }

        return names;
    }

    /// <summary>The names that no sample line of the exposition starts with.</summary>
    internal static List<string> Missing(IEnumerable<string> names, string exposition)
    {
        var exported = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in exposition.Split('\n'))
        {
            if (line.Length > 0 && line[0] != '#')
            {
                var end = line.IndexOfAny(['{', ' ']);
                exported.Add(end < 0 ? line : line[..end]);
            }
        }

        return names.Where(n => !exported.Contains(n)).ToList();
    }

    internal static async Task<string> ScrapeAsync(GatewayUnderTest gateway, params string[] expected)
    {
        // The exporter caches a scrape briefly; read until the last request's series is there (bounded).
        var text = string.Empty;
        for (var i = 0; i < 40 && !expected.All(e => text.Contains(e, StringComparison.Ordinal)); i++)
        {
            if (i > 0)
            {
                await Task.Delay(250);
            }

            text = await gateway.Client.GetStringAsync("/metrics");
        }

        return text;
    }

    private static async Task<(HttpStatusCode Status, JsonElement Report)> HealthAsync(GatewayUnderTest gateway, string path)
    {
        using var response = await gateway.Client.GetAsync(path);
        Assert.StartsWith("application/json", response.Content.Headers.ContentType?.ToString());
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return (response.StatusCode, json.RootElement.Clone());
    }

    private static JsonElement StoreData(JsonElement report) =>
        report.GetProperty("checks").GetProperty("idempotency-store").GetProperty("data");

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "deploy", "prometheus", "idem-alerts.yml")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("deploy/prometheus/idem-alerts.yml not found above " + AppContext.BaseDirectory);
    }

    [GeneratedRegex(@"- alert: (\w+)")]
    private static partial Regex AlertName();

    [GeneratedRegex(@"\bidem_[a-z0-9_]+\b")]
    private static partial Regex MetricName();
}
