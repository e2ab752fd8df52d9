using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using Idem.Cli.Common;
using Spectre.Console;

namespace Idem.Cli.Commands;

/// <summary>
/// <c>idem doctor</c>: checks a store (a real claim → complete → replay → purge round trip, latency, clock skew, schema,
/// Redis eviction and persistence, each tier's reachability) and/or a running server (a repeated key is replayed).
/// </summary>
internal static class DoctorCommand
{
    private const int RoundTrips = 20;
    private static readonly TimeSpan MaxSkew = TimeSpan.FromSeconds(1);

    public static Command Create()
    {
        var store = new StoreOptions(required: false);
        var url = Shell.Option<string?>("--url", "A protected endpoint of a running Idem server or gateway: doctor sends one request twice with a fresh key and expects the second to be a replay (Idempotent-Replayed: true). This executes the endpoint once.", "--url http://127.0.0.1:8080/orders");
        var method = Shell.Option<string>("--method", "The method for --url.", "--method PUT", "-X");
        method.DefaultValueFactory = _ => "POST";
        var body = Shell.Option<string>("--body", "The body for --url.", "--body '{\"item\":\"doctor\"}'", "-d");
        body.DefaultValueFactory = _ => "{\"idemDoctor\":true}";
        var header = Shell.Option<string[]>("--header", "An extra header for --url, repeatable.", "-H 'X-Tenant: acme'", "-H");
        var auth = Shell.Option<string?>("--auth", "The Authorization header for --url; never printed.", "--auth 'Bearer eyJ…'");
        var json = Shell.JsonOption();
        var command = new Command("doctor", "Check a deployment; exit 1 on any finding, each explained with what to do. With --store: a real claim → complete → replay → purge round trip under a throwaway principal (20 times; the records are deleted), store latency p50/p99, clock skew, schema version, Redis eviction policy and persistence, and each tier's reachability. With --url: a repeated key must come back as a replay (the check that catches a missing idempotency cache). Example: idem doctor --store tiered --connection \"$PG\" --redis cache:6379 --url http://127.0.0.1:8080/orders")
        {
            url, method, body, header, auth, json,
        };
        store.AddTo(command);
        command.SetAction((parseResult, cancellationToken) =>
        {
            var authorization = parseResult.GetValue(auth);
            return Shell.RunAsync("doctor", [.. store.SecretsOf(parseResult), authorization], async () =>
            {
                var jsonTarget = Shell.JsonTarget(parseResult, json);
                var console = Shell.HumanConsole(jsonTarget);
                var target = parseResult.GetValue(url) is { } raw
                    ? Uri.TryCreate(raw, UriKind.Absolute, out var parsed) ? parsed : throw new UsageException($"--url '{Secrets.Redact(raw)}' is not an absolute http(s) URL.")
                    : null;
                if (parseResult.GetValue(store.Store) is null && target is null)
                {
                    throw new UsageException("give --store (with --connection) and/or --url.");
                }

                var checks = new List<Check>();
                object? latency = null;
                string? storeDescription = null;
                if (parseResult.GetValue(store.Store) is not null)
                {
                    await using var opened = store.Open(parseResult);
                    storeDescription = opened.Description;
                    latency = await CheckStoreAsync(opened, checks, cancellationToken).ConfigureAwait(false);
                }

                if (target is not null)
                {
                    var headers = (parseResult.GetValue(header) ?? []).Select(ParseHeader).ToList();
                    if (authorization is not null)
                    {
                        headers.Add(new("Authorization", authorization));
                    }

                    await CheckUrlAsync(target, parseResult.GetValue(method)!, parseResult.GetValue(body)!, headers, checks, cancellationToken).ConfigureAwait(false);
                }

                Print(console, storeDescription, target, checks);
                var exit = checks.Any(c => c.Status != CheckStatus.Ok) ? ExitCodes.Finding : ExitCodes.Ok;
                if (jsonTarget is not null)
                {
                    await Shell.WriteJsonAsync(jsonTarget, new
                    {
                        store = storeDescription,
                        url = target is null ? null : Secrets.Redact(target.ToString()),
                        findings = checks.Count(c => c.Status != CheckStatus.Ok),
                        checks,
                        storeLatencyMs = latency,
                        exitCode = exit,
                    }, cancellationToken).ConfigureAwait(false);
                }

                return exit;
            });
        });
        return command;
    }

    private static async Task<object?> CheckStoreAsync(OpenStore opened, List<Check> checks, CancellationToken cancellationToken)
    {
        // Reachability, clock and settings, tier by tier (a tiered store: PostgreSQL, then its Redis cache).
        var reachable = true;
        foreach (var tier in opened.Tiers)
        {
            IdempotencyStoreDescription description;
            var sent = TimeProvider.System.GetUtcNow();
            var watch = Stopwatch.StartNew();
            try
            {
                description = await tier.Admin.DescribeAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                reachable &= tier.IsCache;
                checks.Add(new Check($"{tier.Name}: reachable", CheckStatus.Finding,
                    $"Cannot reach the {tier.Name} tier: {Secrets.Redact(ex.Message)}",
                    tier.IsCache
                        ? "Replays fall back to PostgreSQL (slower, never a duplicate). Check the Redis address, password and network from this host."
                        : "Every protected request fails closed (503) until it is back. Check the address, credentials and network from this host."));
                continue;
            }

            watch.Stop();
            checks.Add(new Check($"{tier.Name}: reachable", CheckStatus.Ok, $"Answered in {watch.Elapsed.TotalMilliseconds:0.0} ms.", null));
            CheckClock(tier, description, sent, watch.Elapsed, checks);
            CheckSchema(tier, description, checks);
            CheckRedis(tier, description, checks);
        }

        if (!reachable)
        {
            return null;
        }

        return await RoundTripsAsync(opened.Store, opened.Admin, checks, cancellationToken).ConfigureAwait(false);
    }

    private static void CheckClock(StoreTier tier, IdempotencyStoreDescription description, DateTimeOffset sent, TimeSpan roundTrip, List<Check> checks)
    {
        if (description.Kind == "sqlite")
        {
            checks.Add(new Check("sqlite: clock", CheckStatus.Ok, "SQLite has no clock of its own: leases are judged by this machine's clock.", null));
            return;
        }

        // The server read its clock somewhere in the round trip: assume the middle.
        var skew = description.StoreTime - (sent + (roundTrip / 2));
        var text = $"{skew.TotalMilliseconds:+0;-0} ms (± {roundTrip.TotalMilliseconds / 2:0} ms)";
        checks.Add(Math.Abs(skew.TotalMilliseconds) - (roundTrip.TotalMilliseconds / 2) > MaxSkew.TotalMilliseconds
            ? new Check($"{tier.Name}: clock skew", CheckStatus.Finding, $"The {tier.Name} clock differs from this machine's by {text}.",
                "Leases and retention are judged by the store's clock, so Idem itself is not affected, but logs and expiry times will disagree across machines: run NTP (chrony, systemd-timesyncd) on both.")
            : new Check($"{tier.Name}: clock skew", CheckStatus.Ok, text, null));
    }

    private static void CheckSchema(StoreTier tier, IdempotencyStoreDescription description, List<Check> checks)
    {
        if (description.LatestSchemaVersion is not { } latest)
        {
            return;
        }

        var found = description.SchemaVersion ?? 0;
        checks.Add(found switch
        {
            0 => new Check($"{tier.Name}: schema", CheckStatus.Finding, "No Idem schema (the table does not exist).", "Run `idem migrate` with the same --store/--connection (or enable CreateSchemaAutomatically)."),
            _ when found < latest => new Check($"{tier.Name}: schema", CheckStatus.Finding, $"Schema version {found}; this release needs {latest}.", "Run `idem migrate` with the same --store/--connection."),
            _ when found > latest => new Check($"{tier.Name}: schema", CheckStatus.Finding, $"Schema version {found} is newer than this tool knows ({latest}).", "Use the idem tool of the release that migrated it."),
            _ => new Check($"{tier.Name}: schema", CheckStatus.Ok, $"Version {found} (current).", null),
        });
    }

    private static void CheckRedis(StoreTier tier, IdempotencyStoreDescription description, List<Check> checks)
    {
        if (!description.Kind.StartsWith("redis", StringComparison.Ordinal))
        {
            return;
        }

        if (!description.Settings.TryGetValue("maxmemory-policy", out var policy))
        {
            checks.Add(new Check($"{tier.Name}: eviction policy", tier.IsCache ? CheckStatus.Ok : CheckStatus.Finding, "Unknown: the server refuses CONFIG GET.",
                tier.IsCache ? null : "Make sure maxmemory-policy is noeviction: a Redis that evicts deletes records, and an evicted in-flight claim lets a retry execute again."));
        }
        else if (policy != "noeviction" && !tier.IsCache)
        {
            checks.Add(new Check($"{tier.Name}: eviction policy", CheckStatus.Finding, $"maxmemory-policy is {policy}: under memory pressure Redis deletes records (every Idem key has a TTL, so volatile-* policies evict them too), and an evicted claim lets a retry execute again.",
                "Set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf), or use the tiered store (claims in PostgreSQL)."));
        }
        else
        {
            checks.Add(new Check($"{tier.Name}: eviction policy", CheckStatus.Ok, tier.IsCache ? $"{policy} (a cache may evict: a miss is served by PostgreSQL)." : policy, null));
        }

        if (tier.IsCache)
        {
            return;
        }

        var aof = description.Settings.GetValueOrDefault("appendonly") ?? description.Settings.GetValueOrDefault("aof_enabled");
        var save = description.Settings.GetValueOrDefault("save");
        if (aof is null && save is null)
        {
            checks.Add(new Check("redis: persistence", CheckStatus.Finding, "Unknown: the server refuses CONFIG GET and INFO.", "Make sure AOF (appendonly yes) is on, or records are lost on restart."));
        }
        else if (aof is "yes" or "1")
        {
            checks.Add(new Check("redis: persistence", CheckStatus.Ok, "AOF on (appendonly yes).", null));
        }
        else
        {
            checks.Add(new Check("redis: persistence", CheckStatus.Finding,
                string.IsNullOrWhiteSpace(save) ? "No persistence: a restart loses every record, and retries of completed requests execute again." : $"Snapshots only (save \"{save}\"): a crash loses the records written since the last snapshot.",
                "Turn on AOF (appendonly yes, appendfsync everysec) or use the tiered store (PostgreSQL as the authority)."));
        }
    }

    private static async Task<object> RoundTripsAsync(IIdempotencyStore store, IIdempotencyStoreAdmin admin, List<Check> checks, CancellationToken cancellationToken)
    {
        var principal = "idem-doctor-" + Guid.NewGuid().ToString("N");
        var totals = new List<double>();
        var failures = new List<string>();
        var body = Encoding.UTF8.GetBytes("{\"idemDoctor\":true}");
        for (var i = 0; i < RoundTrips && failures.Count == 0; i++)
        {
            var key = IdempotencyScope.ComputeStoreKey(principal, "idem doctor", i.ToString(CultureInfo.InvariantCulture));
            var owner = Guid.NewGuid();
            var watch = Stopwatch.StartNew();
            try
            {
                var claim = await store.TryClaimAsync(new ClaimRequest(key, "doctor", owner, TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(5)), cancellationToken).ConfigureAwait(false);
                if (claim.Status != ClaimStatus.Claimed)
                {
                    failures.Add($"claim of a fresh key answered {claim.Status}");
                    break;
                }

                if (!await store.CompleteAsync(key, owner, new StoredResponse(201, [new("Content-Type", "application/json")], body), TimeSpan.FromMinutes(5), cancellationToken).ConfigureAwait(false))
                {
                    failures.Add("the owner's completion was refused");
                }

                var replay = await store.TryClaimAsync(new ClaimRequest(key, "doctor", Guid.NewGuid(), TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(5)), cancellationToken).ConfigureAwait(false);
                if (replay.Status != ClaimStatus.Completed || replay.Record?.Response is not { } stored || !stored.Body.Span.SequenceEqual(body) || stored.StatusCode != 201)
                {
                    failures.Add($"the same key again was not a replay of the stored response (answered {replay.Status})");
                }

                if (!await admin.DeleteAsync(key, cancellationToken).ConfigureAwait(false))
                {
                    failures.Add("the purge found no record");
                }

                watch.Stop();
                totals.Add(watch.Elapsed.TotalMilliseconds);
                if (await store.GetAsync(key, cancellationToken).ConfigureAwait(false) is not null)
                {
                    failures.Add("the record was still there after the purge");
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                failures.Add(Secrets.Redact(ex.Message));
                try
                {
                    await admin.DeleteAsync(key, cancellationToken).ConfigureAwait(false);
                }
#pragma warning disable CA1031 // Best effort: the failure is already reported.
                catch (Exception)
#pragma warning restore CA1031
                {
                }
            }
        }

        var summary = Storm.LatencySummary.Of(totals);
        checks.Add(failures.Count == 0
            ? new Check("store: claim → complete → replay → purge", CheckStatus.Ok,
                $"{totals.Count} round trips under the throwaway principal {principal} (written and deleted): p50 {summary.P50:0.0} ms, p99 {summary.P99:0.0} ms per round trip of 4 operations.", null)
            : new Check("store: claim → complete → replay → purge", CheckStatus.Finding, $"Round trip {totals.Count + 1} failed: {failures[0]}.",
                failures[0].Contains("schema", StringComparison.OrdinalIgnoreCase) || failures[0].Contains("does not exist", StringComparison.OrdinalIgnoreCase)
                    ? "Run `idem migrate`."
                    : "The store does not keep Idem's protocol: check the store's logs, permissions (INSERT, UPDATE, DELETE on the table) and version."));
        return new { roundTrips = totals.Count, p50 = summary.P50, p99 = summary.P99, max = summary.Max };
    }

    private static async Task CheckUrlAsync(Uri url, string method, string body, List<KeyValuePair<string, string>> headers, List<Check> checks, CancellationToken cancellationToken)
    {
        if (!url.IsAbsoluteUri || (url.Scheme != Uri.UriSchemeHttp && url.Scheme != Uri.UriSchemeHttps))
        {
            throw new UsageException($"--url '{url}' is not an absolute http(s) URL.");
        }

        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        var key = Guid.NewGuid().ToString();
        var first = await SendAsync(client, url, method, body, headers, key, cancellationToken).ConfigureAwait(false);
        var second = await SendAsync(client, url, method, body, headers, key, cancellationToken).ConfigureAwait(false);
        var name = $"{method} {Secrets.Redact(url.ToString())}: repeated key replayed";
        if (first.Status >= 500 || first.Status is 408 or 429)
        {
            checks.Add(new Check(name, CheckStatus.Finding, $"The first request answered {first.Status}; a failed request is not stored, so replay cannot be checked.", "Point --url at an endpoint that succeeds with this --body and --method (and --auth)."));
        }
        else if (second.Replayed && second.Status == first.Status && second.Body.AsSpan().SequenceEqual(first.Body))
        {
            checks.Add(new Check(name, CheckStatus.Ok, $"First answered {first.Status}; the same key again came back as a byte-exact replay (Idempotent-Replayed: true).", null));
        }
        else if (second.Replayed)
        {
            checks.Add(new Check(name, CheckStatus.Finding, $"The replay differs from the first answer ({first.Status} then {second.Status}, bodies {(second.Body.AsSpan().SequenceEqual(first.Body) ? "equal" : "different")}).", "Replays must be byte-exact: check for a proxy that rewrites responses between clients and Idem."));
        }
        else
        {
            checks.Add(new Check(name, CheckStatus.Finding,
                $"The same Idempotency-Key sent twice was executed twice ({first.Status}, then {second.Status} without Idempotent-Replayed): this endpoint is not protected. This is how a missing idempotency cache went unnoticed in production.",
                "Make sure the endpoint is behind UseIdempotency()/RequireIdempotency() or an Idem Gateway route for this method, and that its store is configured (idem doctor --store …)."));
        }
    }

    private static async Task<(int Status, bool Replayed, byte[] Body)> SendAsync(HttpClient client, Uri url, string method, string body, List<KeyValuePair<string, string>> headers, string key, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method.ToUpperInvariant()), url)
        {
            Content = new StringContent(body, Encoding.UTF8, new MediaTypeHeaderValue("application/json")),
        };
        foreach (var (name, value) in headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        request.Headers.TryAddWithoutValidation("Idempotency-Key", key);
        using var response = await client.SendAsync(request, cancellationToken).ConfigureAwait(false);
        var bytes = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        var replayed = response.Headers.TryGetValues("Idempotent-Replayed", out var values) && values.Any(v => v.Equals("true", StringComparison.OrdinalIgnoreCase));
        return ((int)response.StatusCode, replayed, bytes);
    }

    private static void Print(IAnsiConsole console, string? store, Uri? url, List<Check> checks)
    {
        console.MarkupLine($"idem doctor: {Markup.Escape(string.Join(" and ", new[] { store, url is null ? null : Secrets.Redact(url.ToString()) }.Where(s => s is not null)))}");
        var table = new Table().Border(TableBorder.Rounded).AddColumn("check").AddColumn("result").AddColumn("what to do");
        foreach (var check in checks)
        {
            table.AddRow(
                Markup.Escape(check.Name),
                check.Status == CheckStatus.Ok ? $"[green]ok[/] {Markup.Escape(check.Detail)}" : $"[red bold]finding[/] {Markup.Escape(check.Detail)}",
                Markup.Escape(check.Remedy ?? ""));
        }

        console.Write(table);
        var findings = checks.Count(c => c.Status != CheckStatus.Ok);
        console.MarkupLine(findings == 0 ? "[green]No findings.[/]" : $"[red bold]{findings} finding(s).[/]");
    }

    private static KeyValuePair<string, string> ParseHeader(string line)
    {
        var colon = line.IndexOf(':', StringComparison.Ordinal);
        return colon <= 0 ? throw new UsageException($"--header '{line}' is not 'Name: value'.") : new(line[..colon].Trim(), line[(colon + 1)..].Trim());
    }

    private enum CheckStatus
    {
        Ok,
        Finding,
    }

    private sealed record Check(string Name, CheckStatus Status, string Detail, string? Remedy);
}
