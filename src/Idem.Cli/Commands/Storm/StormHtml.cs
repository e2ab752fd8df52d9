using System.Globalization;
using System.Net;
using System.Text;

namespace Idem.Cli.Commands.Storm;

/// <summary>The self-contained HTML report: inline CSS and SVG, no script, no external resource.</summary>
internal static class StormHtml
{
    private const int Buckets = 30;

    public static IReadOnlyList<HistogramBucket> Histogram(IReadOnlyList<double> latencies)
    {
        if (latencies.Count == 0)
        {
            return [];
        }

        var max = latencies.Max();
        var width = Math.Max(max / Buckets, 0.01);
        var counts = new int[Buckets];
        foreach (var latency in latencies)
        {
            counts[Math.Min((int)(latency / width), Buckets - 1)]++;
        }

        return [.. counts.Select((count, i) => new HistogramBucket(Math.Round(i * width, 2), Math.Round((i + 1) * width, 2), count))];
    }

    public static string Render(StormReport report)
    {
        var html = new StringBuilder();
        var verdict = report.Duplicates == 0
            ? $"<p class=\"ok\">One execution per round in all {report.Rounds.Count} rounds.</p>"
            : $"<p class=\"bad\">Duplicate executions in {report.Duplicates} of {report.Rounds.Count} rounds.</p>";
        html.Append(CultureInfo.InvariantCulture, $$"""
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>idem storm: {{E(report.Method)}} {{E(report.Url)}}</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
            td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f4f4f4}
            .ok{color:#176b2c;font-weight:bold}.bad{color:#b00020;font-weight:bold}tr.dup td{background:#fde7ea}
            </style></head><body>
            <h1>idem storm</h1>
            <p><code>{{E(report.Method)}} {{E(report.Url)}}</code>: {{report.RoundCount}} rounds of {{report.Concurrency}} concurrent identical requests, key mode {{E(report.KeyMode.ToString())}}, started {{E(report.StartedAt.ToString("u", CultureInfo.InvariantCulture))}}.</p>
            {{verdict}}
            <p>Latency over all requests: p50 {{F(report.LatencyMs.P50)}} ms, p95 {{F(report.LatencyMs.P95)}} ms, p99 {{F(report.LatencyMs.P99)}} ms, max {{F(report.LatencyMs.Max)}} ms.</p>
            <h2>Latency histogram</h2>
            """);
        html.Append(Svg(report.LatencyHistogram));
        html.Append("<h2>Rounds</h2><table><tr><th>round</th><th>requests</th><th>distinct 2xx bodies</th><th>statuses</th><th>replays</th><th>errors</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>\n");
        foreach (var r in report.Rounds)
        {
            html.Append(CultureInfo.InvariantCulture, $"<tr{(r.Duplicate ? " class=\"dup\"" : "")}><td>{r.Round}</td><td>{r.Requests}</td><td class=\"{(r.Duplicate ? "bad" : "ok")}\">{r.DistinctSuccessBodies}</td><td>{E(string.Join(' ', r.Statuses.Select(s => $"{s.Key}×{s.Value}")))}</td><td>{r.Replays}</td><td>{r.Errors}</td><td>{F(r.LatencyMs.P50)}</td><td>{F(r.LatencyMs.P95)}</td><td>{F(r.LatencyMs.P99)}</td><td>{F(r.LatencyMs.Max)}</td></tr>\n");
        }

        html.Append("</table>\n<p>One execution answers every request with the same bytes (the execution and its byte-exact replays); more than one distinct 2xx body in a round means the request ran more than once.</p>\n</body></html>\n");
        return html.ToString();
    }

    private static string Svg(IReadOnlyList<HistogramBucket> buckets)
    {
        const int width = 640, height = 220, left = 40, bottom = 30;
        var svg = new StringBuilder(4096);
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"latency histogram\">\n");
        if (buckets.Count == 0)
        {
            return svg.Append("<text x=\"10\" y=\"20\">no answered requests</text></svg>\n").ToString();
        }

        var max = Math.Max(buckets.Max(b => b.Count), 1);
        var barWidth = (double)(width - left - 10) / buckets.Count;
        var plotHeight = height - bottom - 10;
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{height - bottom}\" x2=\"{width - 10}\" y2=\"{height - bottom}\" stroke=\"#444\"/>\n");
        for (var i = 0; i < buckets.Count; i++)
        {
            var b = buckets[i];
            var h = (double)b.Count / max * plotHeight;
            svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{left + (i * barWidth):0.##}\" y=\"{height - bottom - h:0.##}\" width=\"{Math.Max(barWidth - 1, 1):0.##}\" height=\"{h:0.##}\" fill=\"#3b6fb6\"><title>{F(b.FromMs)}–{F(b.ToMs)} ms: {b.Count}</title></rect>\n");
        }

        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{left}\" y=\"{height - 8}\" font-size=\"12\">0 ms</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{width - 10}\" y=\"{height - 8}\" font-size=\"12\" text-anchor=\"end\">{F(buckets[^1].ToMs)} ms</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"4\" y=\"16\" font-size=\"12\">{max}</text>\n");
        return svg.Append("</svg>\n").ToString();
    }

    private static string E(string text) => WebUtility.HtmlEncode(text);

    private static string F(double value) => value.ToString("0.0", CultureInfo.InvariantCulture);
}
