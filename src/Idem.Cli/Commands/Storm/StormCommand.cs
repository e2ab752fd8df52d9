using System.CommandLine;
using System.Globalization;
using System.Text;
using Idem.Cli.Common;
using Spectre.Console;

namespace Idem.Cli.Commands.Storm;

/// <summary>
/// <c>idem storm URL</c>: N concurrent identical requests per round, R rounds; exit 1 when any round executed more than
/// once (more than one distinct 2xx body).
/// </summary>
internal static class StormCommand
{
    public static Command Create()
    {
        var url = new Argument<string>("URL") { Description = "The endpoint to storm. Example: http://127.0.0.1:8080/orders" };
        var n = Shell.Option<int>("--n", "Concurrent identical requests per round (1-1000).", "--n 50");
        n.DefaultValueFactory = _ => 50;
        var rounds = Shell.Option<int>("--rounds", "Rounds (1-1000); each round waits for all its requests.", "--rounds 5");
        rounds.DefaultValueFactory = _ => 5;
        var method = Shell.Option<string>("--method", "The HTTP method.", "--method PATCH", "-X");
        method.DefaultValueFactory = _ => "POST";
        var body = Shell.Option<string>("--body", "The request body, or @FILE to read it from a file.", "--body '{\"amount\":42}' or --body @order.json", "-d");
        body.DefaultValueFactory = _ => "{\"storm\":true}";
        var contentType = Shell.Option<string>("--content-type", "The body's Content-Type.", "--content-type text/plain");
        contentType.DefaultValueFactory = _ => "application/json";
        var header = Shell.Option<string[]>("--header", "An extra request header, repeatable.", "-H 'X-Tenant: acme'", "-H");
        header.AllowMultipleArgumentsPerToken = false;
        var auth = Shell.Option<string?>("--auth", "The Authorization header (keys are scoped per principal); never printed.", "--auth 'Bearer eyJ…'");
        var delayHeader = Shell.Option<string?>("--delay-header", "A header passed through to the upstream to slow each execution so the requests overlap (for an upstream that honours one).", "--delay-header 'X-Delay-Ms: 300'");
        var noKey = Shell.Option<bool>("--no-key", "Send no idempotency key (shows what the API does without one).", "--no-key");
        var sameKey = Shell.Option<bool>("--same-key", "Use one key for every round instead of a fresh key per round.", "--same-key");
        var keyHeader = Shell.Option<string>("--key-header", "The header carrying the key.", "--key-header Idempotency-Key");
        keyHeader.DefaultValueFactory = _ => "Idempotency-Key";
        var timeout = Shell.Option<TimeSpan>("--timeout", "Per-request timeout.", "--timeout 00:00:30");
        timeout.DefaultValueFactory = _ => TimeSpan.FromSeconds(60);
        var json = Shell.JsonOption();
        var html = Shell.Option<string?>("--html", "Write a self-contained HTML report (inline SVG latency histogram and per-round table; no external resources).", "--html storm.html");

        var command = new Command("storm", "Prove exactly-once: fire N concurrent identical requests per round (one key per round) and count the distinct 2xx bodies. One execution answers every request with the same bytes; more than one distinct body is a duplicate execution (exit 1). An API that returns identical bytes from every execution cannot be judged this way: have it return an id. Example: idem storm http://127.0.0.1:8080/orders --n 50 --rounds 5 --html storm.html")
        {
            url, n, rounds, method, body, contentType, header, auth, delayHeader, noKey, sameKey, keyHeader, timeout, json, html,
        };
        command.SetAction((parseResult, cancellationToken) =>
        {
            var jsonTarget = Shell.JsonTarget(parseResult, json);
            var authorization = parseResult.GetValue(auth);
            return Shell.RunAsync("storm", [authorization], async () =>
            {
                var settings = Settings(parseResult);
                var console = Shell.HumanConsole(jsonTarget);
                return await RunAsync(settings, console, jsonTarget, parseResult.GetValue(html), cancellationToken).ConfigureAwait(false);
            });

            StormSettings Settings(ParseResult p)
            {
                var raw = p.GetValue(url)!;
                if (!Uri.TryCreate(raw, UriKind.Absolute, out var target) || (target.Scheme != Uri.UriSchemeHttp && target.Scheme != Uri.UriSchemeHttps))
                {
                    throw new UsageException($"URL '{Secrets.Redact(raw)}' is not an absolute http(s) URL.");
                }

                var count = p.GetValue(n);
                var roundCount = p.GetValue(rounds);
                if (count is < 1 or > 1000 || roundCount is < 1 or > 1000)
                {
                    throw new UsageException("--n and --rounds must be from 1 to 1000.");
                }

                if (p.GetValue(noKey) && p.GetValue(sameKey))
                {
                    throw new UsageException("--no-key and --same-key exclude each other.");
                }

                var headers = new List<KeyValuePair<string, string>>();
                foreach (var line in p.GetValue(header) ?? [])
                {
                    headers.Add(ParseHeader(line, "--header"));
                }

                if (p.GetValue(delayHeader) is { } delay)
                {
                    headers.Add(ParseHeader(delay, "--delay-header"));
                }

                if (p.GetValue(auth) is { } a)
                {
                    headers.Add(new("Authorization", a));
                }

                return new StormSettings(
                    target,
                    new HttpMethod(p.GetValue(method)!.ToUpperInvariant()),
                    count,
                    roundCount,
                    ReadBody(p.GetValue(body)!),
                    p.GetValue(contentType)!,
                    headers,
                    p.GetValue(noKey) ? StormKeyMode.None : p.GetValue(sameKey) ? StormKeyMode.Same : StormKeyMode.PerRound,
                    p.GetValue(keyHeader)!,
                    p.GetValue(timeout));
            }
        });
        return command;
    }

    private static async Task<int> RunAsync(StormSettings settings, IAnsiConsole console, string? jsonTarget, string? htmlPath, CancellationToken cancellationToken)
    {
        using var handler = StormRunner.CreateHandler(settings.Concurrency);
        var runner = new StormRunner(settings, handler);
        var results = new List<StormRound>();
        var sameKey = Guid.NewGuid().ToString();
        var started = TimeProvider.System.GetUtcNow();

        async Task RunAllAsync(Action onResponse)
        {
            for (var round = 1; round <= settings.Rounds; round++)
            {
                var key = settings.KeyMode switch
                {
                    StormKeyMode.None => null,
                    StormKeyMode.Same => sameKey,
                    _ => Guid.NewGuid().ToString(),
                };
                results.Add(await runner.RunRoundAsync(round, key, onResponse, cancellationToken).ConfigureAwait(false));
            }
        }

        console.MarkupLine($"Storming [bold]{Markup.Escape(settings.Method.Method)} {Markup.Escape(Secrets.Redact(settings.Url.ToString()))}[/]: {settings.Rounds} rounds of {settings.Concurrency} concurrent requests, {Describe(settings.KeyMode)}.");
        if (console.Profile.Capabilities.Interactive)
        {
            await console.Progress().AutoClear(true).StartAsync(async context =>
            {
                var task = context.AddTask("requests", maxValue: settings.Concurrency * settings.Rounds);
                await RunAllAsync(() => task.Increment(1)).ConfigureAwait(false);
            }).ConfigureAwait(false);
        }
        else
        {
            await RunAllAsync(static () => { }).ConfigureAwait(false);
        }

        var allFailed = results.All(r => r.Errors == r.Requests);
        var duplicates = results.Count(r => r.Duplicate);
        var exit = allFailed ? ExitCodes.UsageOrConnection : duplicates > 0 ? ExitCodes.Finding : ExitCodes.Ok;
        var report = new StormReport(
            Secrets.Redact(settings.Url.ToString()),
            settings.Method.Method,
            settings.Concurrency,
            settings.Rounds,
            settings.KeyMode,
            started,
            results,
            duplicates,
            LatencySummary.Of(runner.AllLatencies),
            StormHtml.Histogram(runner.AllLatencies),
            exit);

        Print(console, report);
        if (allFailed)
        {
            await Shell.Stderr.WriteLineAsync($"idem storm: no request got an answer: {results[0].FirstError}").ConfigureAwait(false);
        }

        if (jsonTarget is not null)
        {
            await Shell.WriteJsonAsync(jsonTarget, report, cancellationToken).ConfigureAwait(false);
        }

        if (htmlPath is not null)
        {
            await File.WriteAllTextAsync(htmlPath, StormHtml.Render(report), cancellationToken).ConfigureAwait(false);
            console.MarkupLine($"HTML report: {Markup.Escape(Path.GetFullPath(htmlPath))}");
        }

        return exit;
    }

    private static void Print(IAnsiConsole console, StormReport report)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("round").AddColumn("2xx bodies").AddColumn("statuses").AddColumn("replays")
            .AddColumn("p50 ms").AddColumn("p95 ms").AddColumn("p99 ms").AddColumn("max ms");
        foreach (var round in report.Rounds)
        {
            var bodies = round.Duplicate
                ? $"[red bold]{round.DistinctSuccessBodies} (duplicate)[/]"
                : $"[green]{round.DistinctSuccessBodies}[/]";
            table.AddRow(
                round.Round.ToString(CultureInfo.InvariantCulture),
                bodies,
                Markup.Escape(string.Join(' ', round.Statuses.Select(s => $"{s.Key}×{s.Value}"))),
                round.Replays.ToString(CultureInfo.InvariantCulture),
                Ms(round.LatencyMs.P50), Ms(round.LatencyMs.P95), Ms(round.LatencyMs.P99), Ms(round.LatencyMs.Max));
        }

        console.Write(table);
        if (report.ExitCode == ExitCodes.UsageOrConnection)
        {
            return;
        }

        console.MarkupLine(report.Duplicates == 0
            ? $"[green]One execution per round[/] in all {report.Rounds.Count} rounds (exit 0)."
            : $"[red bold]Duplicate executions in {report.Duplicates} of {report.Rounds.Count} rounds[/] (exit 1).");
    }

    private static string Ms(double value) => value.ToString("0.0", CultureInfo.InvariantCulture);

    private static string Describe(StormKeyMode mode) => mode switch
    {
        StormKeyMode.None => "no key",
        StormKeyMode.Same => "one key for all rounds",
        _ => "a fresh key per round",
    };

    private static KeyValuePair<string, string> ParseHeader(string line, string option)
    {
        var colon = line.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0)
        {
            throw new UsageException($"{option} '{line}' is not 'Name: value'.");
        }

        return new(line[..colon].Trim(), line[(colon + 1)..].Trim());
    }

    private static byte[] ReadBody(string body)
    {
        if (body.StartsWith('@'))
        {
            var path = body[1..];
            return File.Exists(path) ? File.ReadAllBytes(path) : throw new UsageException($"--body {body}: no such file.");
        }

        return Encoding.UTF8.GetBytes(body);
    }
}

/// <summary>All the figures of a storm, as written by <c>--json</c> and <c>--html</c>.</summary>
internal sealed record StormReport(
    string Url,
    string Method,
    int Concurrency,
    int RoundCount,
    StormKeyMode KeyMode,
    DateTimeOffset StartedAt,
    IReadOnlyList<StormRound> Rounds,
    int Duplicates,
    LatencySummary LatencyMs,
    IReadOnlyList<HistogramBucket> LatencyHistogram,
    int ExitCode);

/// <summary>One bar of the latency histogram: requests with latency in [FromMs, ToMs).</summary>
internal sealed record HistogramBucket(double FromMs, double ToMs, int Count);
