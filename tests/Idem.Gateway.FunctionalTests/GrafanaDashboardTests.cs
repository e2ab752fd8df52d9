using System.Text.Json;
using System.Text.RegularExpressions;

namespace Idem.Gateway.FunctionalTests;

/// <summary>
/// The Grafana dashboard in <c>deploy/grafana/</c>: valid dashboard JSON (panels, layout, the datasource variable every
/// query uses), and every metric its PromQL names, found by reading the expressions rather than by a name pattern. The
/// names are compared with a running gateway's <c>/metrics</c> in
/// <see cref="ObservabilityTests.Every_metric_the_alert_rules_and_the_dashboard_name_is_exported_by_a_running_gateway"/>.
/// Grafana itself is not installable here (no Debian package), so it is not loaded into a real Grafana.
/// </summary>
public sealed partial class GrafanaDashboardTests
{
    private static readonly HashSet<string> PanelTypes = ["stat", "timeseries", "gauge", "bargauge", "table", "text", "heatmap", "row"];

    // PromQL words that are not metric names: aggregation and set operators, modifiers, and keywords.
    private static readonly HashSet<string> Keywords =
    [
        "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "inf", "nan", "atan2",
    ];

    [Fact]
    public void The_dashboard_is_valid_dashboard_json_whose_panels_all_query_the_datasource_variable()
    {
        using var document = JsonDocument.Parse(File.ReadAllText(DashboardPath()));
        var root = document.RootElement;
        Assert.False(string.IsNullOrWhiteSpace(root.GetProperty("title").GetString()));
        Assert.Matches("^[A-Za-z0-9_-]{1,40}$", root.GetProperty("uid").GetString()); // Grafana's uid rule
        Assert.True(root.GetProperty("schemaVersion").GetInt32() >= 30, "schemaVersion below Grafana 8's");

        // The datasource variable, and every variable the queries use defined.
        var variables = root.GetProperty("templating").GetProperty("list").EnumerateArray().ToDictionary(v => v.GetProperty("name").GetString()!);
        var datasource = variables["datasource"];
        Assert.Equal("datasource", datasource.GetProperty("type").GetString());
        Assert.Equal("prometheus", datasource.GetProperty("query").GetString());

        var panels = root.GetProperty("panels").EnumerateArray().ToList();
        Assert.True(panels.Count >= 5, $"{panels.Count} panels");
        Assert.Equal(panels.Count, panels.Select(p => p.GetProperty("id").GetInt32()).Distinct().Count()); // ids unique
        var occupied = new HashSet<(int X, int Y)>();
        foreach (var panel in panels)
        {
            var title = panel.GetProperty("title").GetString()!;
            Assert.False(string.IsNullOrWhiteSpace(title));
            Assert.Contains(panel.GetProperty("type").GetString()!, PanelTypes);
            var grid = panel.GetProperty("gridPos");
            var (x, y, w, h) = (grid.GetProperty("x").GetInt32(), grid.GetProperty("y").GetInt32(), grid.GetProperty("w").GetInt32(), grid.GetProperty("h").GetInt32());
            Assert.True(x >= 0 && w > 0 && x + w <= 24 && y >= 0 && h > 0, $"Panel '{title}' lies outside Grafana's 24-column grid.");
            for (var cx = x; cx < x + w; cx++)
            {
                for (var cy = y; cy < y + h; cy++)
                {
                    Assert.True(occupied.Add((cx, cy)), $"Panel '{title}' overlaps another panel at ({cx}, {cy}).");
                }
            }

            Assert.Equal("${datasource}", panel.GetProperty("datasource").GetProperty("uid").GetString());
            var targets = panel.GetProperty("targets").EnumerateArray().ToList();
            Assert.NotEmpty(targets);
            Assert.Equal(targets.Count, targets.Select(t => t.GetProperty("refId").GetString()).Distinct().Count());
            foreach (var target in targets)
            {
                var expr = target.GetProperty("expr").GetString()!;
                Assert.False(string.IsNullOrWhiteSpace(expr), $"Panel '{title}' has an empty query.");
                Assert.True(Balanced(expr), $"Unbalanced brackets in '{expr}'.");
                foreach (Match variable in Variable().Matches(expr))
                {
                    var name = variable.Groups[1].Value;
                    Assert.True(name.StartsWith("__", StringComparison.Ordinal) || variables.ContainsKey(name), $"Panel '{title}' uses ${name}, which the dashboard does not define.");
                }
            }
        }
    }

    [Fact]
    public void Metric_names_are_read_from_the_queries_not_from_labels_functions_or_variables()
    {
        Assert.Equal(
            ["idem_claim_duration_seconds_bucket", "idem_requests_total", "idem_store_errors_total"],
            MetricNames([
                "histogram_quantile(0.99, sum by (le) (rate(idem_claim_duration_seconds_bucket{job=~\"$job\", idem_outcome=\"x\"}[5m])))",
                "(sum(rate(idem_store_errors_total[5m])) or vector(0)) / clamp_min(sum without (instance) (rate(idem_requests_total{a=\"idem_fake_total\"}[$__rate_interval])), 1e-9)",
            ]));

        // What the dashboard names is exactly what its queries and variable queries name: the non-idem ones included.
        var names = DashboardMetricNames();
        Assert.Contains("idem_requests_total", names);
        Assert.Contains("idem_cache_fallback", names);
        Assert.DoesNotContain("idem_outcome", names); // a label
        Assert.DoesNotContain("job", names); // label_values(metric, job): the label
        Assert.All(names, n => Assert.Matches("^[a-zA-Z_:][a-zA-Z0-9_:]*$", n));

        // A name the app does not emit is reported by the comparison the scrape test makes.
        Assert.Equal(["idem_made_up_total"], ObservabilityTests.Missing(MetricNames(["sum(rate(idem_made_up_total[5m]))"]), "idem_requests_total{a=\"b\"} 1\n"));
    }

    /// <summary>Every metric the dashboard's panel queries and variable queries name.</summary>
    internal static SortedSet<string> DashboardMetricNames()
    {
        using var document = JsonDocument.Parse(File.ReadAllText(DashboardPath()));
        var root = document.RootElement;
        var expressions = new List<string>();
        foreach (var panel in root.GetProperty("panels").EnumerateArray())
        {
            if (panel.TryGetProperty("targets", out var targets))
            {
                expressions.AddRange(targets.EnumerateArray().Select(t => t.GetProperty("expr").GetString()!));
            }
        }

        foreach (var variable in root.GetProperty("templating").GetProperty("list").EnumerateArray())
        {
            if (variable.GetProperty("type").GetString() == "query")
            {
                var query = variable.GetProperty("query");
                expressions.Add(query.ValueKind == JsonValueKind.Object ? query.GetProperty("query").GetString()! : query.GetString()!);
            }
        }

        return MetricNames(expressions);
    }

    /// <summary>
    /// The metric names in PromQL expressions: strings, label matchers, ranges, grouping clauses and variables are removed,
    /// <c>label_values(metric, label)</c> keeps its metric, and what is left that is not a function call, a keyword or a
    /// number is a metric name.
    /// </summary>
    internal static SortedSet<string> MetricNames(IEnumerable<string> expressions)
    {
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var expression in expressions)
        {
            var text = Strings().Replace(expression, " ");
            text = Matchers().Replace(text, " ");
            text = Ranges().Replace(text, " ");
            text = LabelValues().Replace(text, "$1");
            text = Grouping().Replace(text, " ");
            text = Variable().Replace(text, " ");
            foreach (Match m in Identifier().Matches(text))
            {
                if (!m.Groups[2].Success && !Keywords.Contains(m.Groups[1].Value))
                {
                    names.Add(m.Groups[1].Value);
                }
            }
        }

        return names;
    }

    private static bool Balanced(string expr)
    {
        var stack = new Stack<char>();
        foreach (var c in Strings().Replace(expr, "\"\""))
        {
            switch (c)
            {
                case '(' or '[' or '{':
                    stack.Push(c);
                    break;
                case ')' or ']' or '}':
                    if (stack.Count == 0 || stack.Pop() != c switch { ')' => '(', ']' => '[', _ => '{' })
                    {
                        return false;
                    }

                    break;
            }
        }

        return stack.Count == 0;
    }

    private static string DashboardPath() => Path.Combine(ObservabilityTests.RepositoryRoot(), "deploy", "grafana", "idem-dashboard.json");

    [GeneratedRegex("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'")]
    private static partial Regex Strings();

    [GeneratedRegex(@"\{[^{}]*\}")]
    private static partial Regex Matchers();

    [GeneratedRegex(@"\[[^\[\]]*\]")]
    private static partial Regex Ranges();

    [GeneratedRegex(@"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)")]
    private static partial Regex LabelValues();

    [GeneratedRegex(@"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")]
    private static partial Regex Grouping();

    [GeneratedRegex(@"\$\{?(\w+)(?::\w+)?\}?")]
    private static partial Regex Variable();

    // An identifier not glued to a number or a dot (1e-9), and whether a call's "(" follows it.
    [GeneratedRegex(@"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")]
    private static partial Regex Identifier();
}
