using System.CommandLine;
using System.Globalization;
using System.Text;
using Idem.Cli.Common;
using Spectre.Console;

namespace Idem.Cli.Commands;

/// <summary><c>idem keys list|show|purge</c>: the store's records, through the store's own <see cref="IIdempotencyStoreAdmin"/>.</summary>
internal static class KeysCommand
{
    public static Command Create()
    {
        var command = new Command("keys", "Inspect and purge idempotency records. Store keys are SHA-256 hashes of (principal, method, route, Idempotency-Key); beside each record the store keeps the principal's hash (never the principal) and the operation (\"METHOD /route\"), so records are found by principal, route, state and age, or by store key (show --principal/--operation/--idempotency-key computes one). Records written before the store kept them show \"unknown\" and match no principal or route filter. Example: idem keys list --store sqlite --connection idem.db --state in-flight --route /orders");
        command.Subcommands.Add(List());
        command.Subcommands.Add(Show());
        command.Subcommands.Add(Purge());
        return command;
    }

    private static Command List()
    {
        var store = new StoreOptions(required: true);
        var state = Shell.Option<string?>("--state", "Only records in this state: in-flight, completed, or expired (past retention, not purged yet).", "--state in-flight");
        state.AcceptOnlyFromAmong("in-flight", "completed", "expired");
        var olderThan = Shell.Option<TimeSpan?>("--older-than", "Only records older than this, counted from their claim or completion (assumes --retention).", "--older-than 02:00:00");
        var newerThan = Shell.Option<TimeSpan?>("--newer-than", "Only records newer than this, counted from their claim or completion (assumes --retention).", "--newer-than 00:10:00");
        var principalHash = Shell.Option<string?>("--principal-hash", "Only records claimed by the principal with this hash (32 hex digits, the \"principal\" column). Records written before the store kept it (\"unknown\") never match.", "--principal-hash 9f86d081884c7d659a2feaa0c55ad015");
        var principal = Shell.Option<string?>("--principal", "Instead of --principal-hash: the resolved principal (a user id; the gateway's principal hash), hashed here; it is never sent to the store.", "--principal user-42");
        var route = Shell.Option<string?>("--route", "Only records of this route (any method) or operation (\"METHOD route\"), as the endpoint's route template. Records written before the store kept it (\"unknown\") never match.", "--route /orders/{id}");
        var retention = Shell.Option<TimeSpan>("--retention", "The retention the application uses, to tell a record's age from its expiry.", "--retention 1.00:00:00");
        retention.DefaultValueFactory = _ => TimeSpan.FromHours(24);
        var prefix = Shell.Option<string?>("--prefix", "Only store keys starting with this.", "--prefix 3fa2");
        var limit = Shell.Option<int>("--limit", "The most records listed (1-100000).", "--limit 500");
        limit.DefaultValueFactory = _ => 100;
        var json = Shell.JsonOption();
        var command = new Command("list", "List records: store key, principal hash, operation, state, status, age and expiry. Example: idem keys list --store postgresql --connection \"$PG\" --principal-hash 9f86d081884c7d659a2feaa0c55ad015 --route /orders --state completed --older-than 12:00:00 --json")
        {
            state, olderThan, newerThan, retention, principalHash, principal, route, prefix, limit, json,
        };
        store.AddTo(command);
        command.SetAction((parseResult, cancellationToken) =>
            Shell.RunAsync("keys list", store.SecretsOf(parseResult), async () =>
            {
                var jsonTarget = Shell.JsonTarget(parseResult, json);
                var console = Shell.HumanConsole(jsonTarget);
                await using var opened = store.Open(parseResult);
                var now = (await opened.Admin.DescribeAsync(cancellationToken).ConfigureAwait(false)).StoreTime;
                var stateValue = parseResult.GetValue(state);
                var principalHashValue = PrincipalHashOf(parseResult.GetValue(principalHash), parseResult.GetValue(principal));
                var routeValue = parseResult.GetValue(route);
                if (routeValue is { Length: 0 })
                {
                    throw new UsageException("--route needs a route, for example /orders.");
                }

                var query = new IdempotencyRecordQuery
                {
                    State = stateValue switch
                    {
                        "in-flight" => IdempotencyRecordState.InFlight,
                        "completed" => IdempotencyRecordState.Completed,
                        _ => null,
                    },
                    Expired = stateValue == "expired",
                    ExpiresBefore = parseResult.GetValue(olderThan) is { } age ? now + parseResult.GetValue(retention) - age : null,
                    ExpiresAfter = parseResult.GetValue(newerThan) is { } young ? now + parseResult.GetValue(retention) - young : null,
                    PrincipalHash = principalHashValue,
                    Route = routeValue,
                    KeyPrefix = parseResult.GetValue(prefix),
                    Limit = Math.Clamp(parseResult.GetValue(limit), 1, 100_000),
                };
                var records = new List<IdempotencyRecord>();
                await foreach (var record in opened.Admin.ListAsync(query, cancellationToken).ConfigureAwait(false))
                {
                    records.Add(record);
                }

                var retentionValue = parseResult.GetValue(retention);
                var table = new Table().Border(TableBorder.Rounded).AddColumn("store key").AddColumn("principal").AddColumn("operation").AddColumn("state").AddColumn("status").AddColumn("age").AddColumn("expires in");
                foreach (var record in records)
                {
                    table.AddRow(
                        Markup.Escape(record.Key),
                        Markup.Escape(record.Metadata?.PrincipalHash ?? Unknown),
                        Markup.Escape(record.Metadata?.Operation ?? Unknown),
                        Markup.Escape(StateName(record, now)),
                        record.Response?.StatusCode.ToString(CultureInfo.InvariantCulture) ?? "",
                        Duration(retentionValue - (record.ExpiresAt - now)),
                        Duration(record.ExpiresAt - now));
                }

                console.MarkupLine($"{Markup.Escape(opened.Description)}: {records.Count} record(s){(records.Count == query.Limit ? " (limit reached)" : "")}.");
                console.Write(table);
                if (jsonTarget is not null)
                {
                    await Shell.WriteJsonAsync(jsonTarget, new
                    {
                        store = opened.Description,
                        storeTime = now,
                        count = records.Count,
                        records = records.Select(r => Summary(r, now)),
                    }, cancellationToken).ConfigureAwait(false);
                }

                return ExitCodes.Ok;
            }));
        return command;
    }

    private static Command Show()
    {
        var store = new StoreOptions(required: true);
        var key = new Argument<string?>("KEY") { Description = "The store key (64 hex digits), as `keys list` and the logs show it. Example: 3fa2…", Arity = ArgumentArity.ZeroOrOne };
        var principal = Shell.Option<string?>("--principal", "With --operation and --idempotency-key instead of KEY: the resolved principal (user id; the gateway's principal hash), to compute the store key.", "--principal user-42");
        var operation = Shell.Option<string?>("--operation", "The operation: \"METHOD route\" as the middleware scopes it, or a worker's scope.", "--operation \"POST /orders\"");
        var clientKey = Shell.Option<string?>("--idempotency-key", "The client's Idempotency-Key.", "--idempotency-key 9b1d…");
        var json = Shell.JsonOption();
        var command = new Command("show", "Show one record and decode its stored response: status, headers, body (text, or base64 when binary). Example: idem keys show 3fa2… --store sqlite --connection idem.db")
        {
            key, principal, operation, clientKey, json,
        };
        store.AddTo(command);
        command.SetAction((parseResult, cancellationToken) =>
            Shell.RunAsync("keys show", store.SecretsOf(parseResult), async () =>
            {
                var jsonTarget = Shell.JsonTarget(parseResult, json);
                var console = Shell.HumanConsole(jsonTarget);
                var storeKey = StoreKeyOf(parseResult, key, principal, operation, clientKey);
                await using var opened = store.Open(parseResult);
                var now = (await opened.Admin.DescribeAsync(cancellationToken).ConfigureAwait(false)).StoreTime;
                var record = await FindAsync(opened.Admin, storeKey, cancellationToken).ConfigureAwait(false);
                if (record is null)
                {
                    throw new UsageException($"no record with store key {storeKey} in {opened.Description}.");
                }

                var grid = new Grid().AddColumn().AddColumn();
                grid.AddRow("store key", Markup.Escape(record.Key));
                grid.AddRow("principal", Markup.Escape(record.Metadata?.PrincipalHash ?? Unknown));
                grid.AddRow("operation", Markup.Escape(record.Metadata?.Operation ?? Unknown));
                grid.AddRow("state", Markup.Escape(StateName(record, now)));
                grid.AddRow("fingerprint", Markup.Escape(record.Fingerprint));
                grid.AddRow("owner", record.OwnerToken.ToString());
                grid.AddRow("lease ends", Markup.Escape(record.LeaseExpiresAt.ToString("u", CultureInfo.InvariantCulture)));
                grid.AddRow("expires", Markup.Escape(record.ExpiresAt.ToString("u", CultureInfo.InvariantCulture)));
                if (record.Response is { } response)
                {
                    grid.AddRow("status", response.StatusCode.ToString(CultureInfo.InvariantCulture));
                    foreach (var (name, value) in response.Headers)
                    {
                        grid.AddRow("header", Markup.Escape($"{name}: {value}"));
                    }

                    var (text, encoding) = Decode(response);
                    grid.AddRow("body", response.BodyOmitted ? "(too large to retain: replays get 409)" : Markup.Escape($"{text}{(encoding == "base64" ? " (base64)" : "")}"));
                }

                console.Write(grid);
                if (jsonTarget is not null)
                {
                    await Shell.WriteJsonAsync(jsonTarget, Detail(record, now), cancellationToken).ConfigureAwait(false);
                }

                return ExitCodes.Ok;
            }));
        return command;
    }

    private static Command Purge()
    {
        var store = new StoreOptions(required: true);
        var key = new Argument<string?>("KEY") { Description = "The store key of the one record to delete (the next request with it runs again). Example: 3fa2…", Arity = ArgumentArity.ZeroOrOne };
        var expired = Shell.Option<bool>("--expired", "Delete every record past retention instead (what the application's background purge does).", "--expired");
        var dryRun = Shell.Option<bool>("--dry-run", "Show what would be deleted; delete nothing.", "--dry-run");
        var yes = Shell.YesOption();
        var json = Shell.JsonOption();
        var command = new Command("purge", "Delete one record (KEY) or every expired record (--expired). Asks first unless --yes; --dry-run only shows. Example: idem keys purge --expired --store postgresql --connection \"$PG\" --yes")
        {
            key, expired, dryRun, yes, json,
        };
        store.AddTo(command);
        command.SetAction((parseResult, cancellationToken) =>
            Shell.RunAsync("keys purge", store.SecretsOf(parseResult), async () =>
            {
                var jsonTarget = Shell.JsonTarget(parseResult, json);
                var console = Shell.HumanConsole(jsonTarget);
                var storeKey = parseResult.GetValue(key);
                var all = parseResult.GetValue(expired);
                if ((storeKey is null) == !all)
                {
                    throw new UsageException("give either KEY or --expired.");
                }

                var dry = parseResult.GetValue(dryRun);
                await using var opened = store.Open(parseResult);
                int deleted;
                int found;
                if (storeKey is not null)
                {
                    var record = await FindAsync(opened.Admin, storeKey, cancellationToken).ConfigureAwait(false);
                    var now = (await opened.Admin.DescribeAsync(cancellationToken).ConfigureAwait(false)).StoreTime;
                    found = record is null ? 0 : 1;
                    if (record is null)
                    {
                        console.MarkupLine($"No record with store key {Markup.Escape(storeKey)}: nothing to delete.");
                        deleted = 0;
                    }
                    else if (dry)
                    {
                        console.MarkupLine($"Dry run: would delete {Markup.Escape(storeKey)} ({Markup.Escape(StateName(record, now))}{(record.Response is { } r ? ", status " + r.StatusCode : "")}).");
                        deleted = 0;
                    }
                    else if (Shell.Confirm(console, parseResult.GetValue(yes), $"Delete record {storeKey} ({StateName(record, now)})? The next request with its key runs again."))
                    {
                        deleted = await opened.Admin.DeleteAsync(storeKey, cancellationToken).ConfigureAwait(false) ? 1 : 0;
                        console.MarkupLine(deleted == 1 ? $"Deleted {Markup.Escape(storeKey)}." : "It was gone already.");
                    }
                    else
                    {
                        console.MarkupLine("Not deleted.");
                        deleted = 0;
                    }
                }
                else
                {
                    found = 0;
                    await foreach (var _ in opened.Admin.ListAsync(new IdempotencyRecordQuery { Expired = true, Limit = 100_000 }, cancellationToken).ConfigureAwait(false))
                    {
                        found++;
                    }

                    deleted = 0;
                    if (found == 0)
                    {
                        console.MarkupLine(opened.Kind == StoreKind.Redis
                            ? "Nothing to purge: Redis deletes each record when its retention ends."
                            : "No expired records: nothing to purge.");
                    }
                    else if (dry)
                    {
                        console.MarkupLine($"Dry run: would delete {found}{(found == 100_000 ? "+" : "")} expired record(s).");
                    }
                    else if (Shell.Confirm(console, parseResult.GetValue(yes), $"Delete {found}{(found == 100_000 ? "+" : "")} expired record(s)?"))
                    {
                        const int batch = 1000;
                        for (var pass = 0; pass < 100_000; pass++)
                        {
                            var purged = await opened.Store.PurgeExpiredAsync(batch, cancellationToken).ConfigureAwait(false);
                            deleted += purged;
                            if (purged < batch)
                            {
                                break;
                            }
                        }

                        console.MarkupLine($"Deleted {deleted} expired record(s).");
                    }
                    else
                    {
                        console.MarkupLine("Not deleted.");
                    }
                }

                if (jsonTarget is not null)
                {
                    await Shell.WriteJsonAsync(jsonTarget, new { store = opened.Description, dryRun = dry, found, deleted }, cancellationToken).ConfigureAwait(false);
                }

                return ExitCodes.Ok;
            }));
        return command;
    }

    // What a record written before the store kept metadata shows (its JSON has null).
    private const string Unknown = "unknown";

    private static string? PrincipalHashOf(string? hash, string? principal)
    {
        if (hash is not null && principal is not null)
        {
            throw new UsageException("give --principal-hash or --principal, not both.");
        }

        if (principal is not null)
        {
            return IdempotencyScope.ComputePrincipalHash(principal);
        }

        if (hash is not null && (hash.Length != 32 || !hash.All(char.IsAsciiHexDigit)))
        {
            throw new UsageException($"--principal-hash must be 32 hexadecimal digits, as keys list shows it; got {hash.Length} characters.");
        }

        return hash?.ToLowerInvariant();
    }

    private static string StoreKeyOf(ParseResult parseResult, Argument<string?> key, Option<string?> principal, Option<string?> operation, Option<string?> clientKey)
    {
        var parts = (P: parseResult.GetValue(principal), O: parseResult.GetValue(operation), K: parseResult.GetValue(clientKey));
        if (parseResult.GetValue(key) is { } storeKey)
        {
            return parts is (null, null, null) ? storeKey : throw new UsageException("give KEY or --principal/--operation/--idempotency-key, not both.");
        }

        if (parts.O is null || parts.K is null)
        {
            throw new UsageException("give the store KEY, or --operation and --idempotency-key (and --principal unless anonymous).");
        }

        return IdempotencyScope.ComputeStoreKey(parts.P ?? string.Empty, parts.O, parts.K);
    }

    /// <summary>The record of <paramref name="storeKey"/>, expired or not (a purge should see what it deletes).</summary>
    private static async Task<IdempotencyRecord?> FindAsync(IIdempotencyStoreAdmin admin, string storeKey, CancellationToken cancellationToken)
    {
        await foreach (var record in admin.ListAsync(new IdempotencyRecordQuery { KeyPrefix = storeKey, Expired = null, Limit = 10 }, cancellationToken).ConfigureAwait(false))
        {
            if (record.Key == storeKey)
            {
                return record;
            }
        }

        return null;
    }

    private static string StateName(IdempotencyRecord record, DateTimeOffset now) =>
        record.ExpiresAt <= now ? "expired"
        : record.State == IdempotencyRecordState.Completed ? "completed"
        : record.LeaseExpiresAt <= now ? "in-flight (lease expired: the owner died; the next request takes over)"
        : "in-flight";

    private static object Summary(IdempotencyRecord record, DateTimeOffset now) => new
    {
        key = record.Key,
        state = record.ExpiresAt <= now ? "expired" : record.State == IdempotencyRecordState.Completed ? "completed" : "in-flight",
        leaseExpired = record.State == IdempotencyRecordState.InFlight && record.LeaseExpiresAt <= now,
        principalHash = record.Metadata?.PrincipalHash,
        operation = record.Metadata?.Operation,
        statusCode = record.Response?.StatusCode,
        leaseExpiresAt = record.LeaseExpiresAt,
        expiresAt = record.ExpiresAt,
    };

    private static object Detail(IdempotencyRecord record, DateTimeOffset now)
    {
        var response = record.Response;
        var decoded = response is null ? default : Decode(response);
        return new
        {
            key = record.Key,
            state = record.ExpiresAt <= now ? "expired" : record.State == IdempotencyRecordState.Completed ? "completed" : "in-flight",
            principalHash = record.Metadata?.PrincipalHash,
            operation = record.Metadata?.Operation,
            fingerprint = record.Fingerprint,
            ownerToken = record.OwnerToken,
            leaseExpiresAt = record.LeaseExpiresAt,
            expiresAt = record.ExpiresAt,
            response = response is null ? null : new
            {
                statusCode = response.StatusCode,
                headers = response.Headers.Select(h => new { name = h.Key, value = h.Value }),
                bodyOmitted = response.BodyOmitted,
                body = decoded.Text,
                bodyEncoding = decoded.Encoding,
            },
        };
    }

    /// <summary>The body as text when it is valid UTF-8 without control characters (JSON pretty-printed), otherwise base64.</summary>
    private static (string Text, string Encoding) Decode(StoredResponse response)
    {
        var bytes = response.Body.Span;
        try
        {
            var text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            if (text.Any(c => char.IsControl(c) && c is not '\n' and not '\r' and not '\t'))
            {
                return (Convert.ToBase64String(bytes), "base64");
            }

            return (text, "utf-8");
        }
        catch (DecoderFallbackException)
        {
            return (Convert.ToBase64String(bytes), "base64");
        }
    }

    private static string Duration(TimeSpan span) => span < TimeSpan.Zero
        ? "-" + Duration(-span)
        : span.TotalDays >= 1 ? $"{(int)span.TotalDays}d{span.Hours}h"
        : span.TotalHours >= 1 ? $"{(int)span.TotalHours}h{span.Minutes}m"
        : span.TotalMinutes >= 1 ? $"{(int)span.TotalMinutes}m{span.Seconds}s"
        : $"{span.TotalSeconds:0.0}s";
}
