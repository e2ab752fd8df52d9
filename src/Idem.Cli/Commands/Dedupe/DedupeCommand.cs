using System.CommandLine;
using System.Text.RegularExpressions;
using Idem.Cli.Common;

namespace Idem.Cli.Commands.Dedupe;

/// <summary>
/// <c>idem dedupe report|backfill|merge|lock</c>: repairs a table that already holds duplicates of a natural key, then
/// locks them out with a unique index. Dry run by default; <c>--apply</c> does it in one transaction.
/// </summary>
internal static partial class DedupeCommand
{
    public static Command Create()
    {
        var command = new Command("dedupe", "Repair a table that already holds duplicates of a natural key (PostgreSQL or SQLite): report the groups, backfill a key column, merge each group into its oldest row (re-pointing every foreign key found in the catalog), then lock with a unique index. Dry run by default (prints exactly what it would do); --apply does it in one transaction; a second run changes nothing. Example: idem dedupe report --database sqlite --connection app.db --table chats --sorted-set user_a,user_b");
        command.Subcommands.Add(Create("report", "List the duplicate groups: natural key, count, ids (oldest first). Exit 1 when there are any. Example: idem dedupe report --database postgresql --connection \"$PG\" --table projects --columns build_id"));
        command.Subcommands.Add(Create("backfill", "Fill --key-column with the natural key (added as a text column when missing) on every row where it differs. Example: idem dedupe backfill --database sqlite --connection app.db --table chats --sorted-set user_a,user_b --key-column participants_key --apply"));
        command.Subcommands.Add(Create("merge", "Keep one survivor per group (the oldest by --keep-oldest-by, default the primary key), re-point every foreign key that references a loser (found in information_schema/pg_catalog or pragma foreign_key_list), delete the losers. Example: idem dedupe merge --database postgresql --connection \"$PG\" --table chats --sorted-set user_a,user_b --keep-oldest-by created_at --apply"));
        command.Subcommands.Add(Create("lock", "Add the unique index on the key columns (tuple) or on --key-column (sorted set) so no duplicate can come back; refuses (exit 1) while duplicates or unfilled keys remain. Example: idem dedupe lock --database sqlite --connection app.db --table chats --sorted-set user_a,user_b --key-column participants_key --apply"));
        return command;
    }

    private static Command Create(string operation, string description)
    {
        var database = Shell.Option<string>("--database", "The database: postgresql or sqlite.", "--database postgresql");
        database.Required = true;
        database.AcceptOnlyFromAmong("postgresql", "sqlite");
        var connection = Shell.Option<string?>("--connection", $"The connection string (SQLite: a file path or connection string); defaults to ${StoreOptions.ConnectionVariable}; printed masked.", "--connection \"Host=db;Username=app;Password=…;Database=app\"", "-c");
        var table = Shell.Option<string>("--table", "The table holding duplicates (PostgreSQL: TABLE or SCHEMA.TABLE), as the catalog names it.", "--table public.chats");
        table.Required = true;
        var columns = Shell.Option<string?>("--columns", "The natural key as a tuple of columns (comma separated).", "--columns tenant_id,email");
        var sortedSet = Shell.Option<string?>("--sorted-set", "The natural key as the unordered set of these columns' values (sorted, joined by --separator): (alice,bob) = (bob,alice).", "--sorted-set user_a,user_b");
        var separator = Shell.Option<string>("--separator", "Joins the values of a sorted-set (and backfilled tuple) key.", "--separator ,");
        separator.DefaultValueFactory = _ => ",";
        var keyColumn = Shell.Option<string?>("--key-column", "The column backfill fills with the key text, and lock indexes for a sorted-set key.", "--key-column participants_key");
        var keepOldestBy = Shell.Option<string?>("--keep-oldest-by", "merge keeps the row with the smallest value here (ties: smallest id); default the primary key.", "--keep-oldest-by created_at");
        var id = Shell.Option<string?>("--id", "The unique id column when the table's primary key is missing or has several columns.", "--id uuid");
        var indexName = Shell.Option<string?>("--index-name", "The unique index lock creates (letters, digits, underscores); default ux_<table>_<columns>.", "--index-name ux_chats_participants");
        var apply = Shell.Option<bool>("--apply", "Make the change, in one transaction. Without it the command is a dry run that prints exactly what it would do.", "--apply");
        var json = Shell.JsonOption();
        var command = new Command(operation, description)
        {
            database, connection, table, columns, sortedSet, separator, keyColumn, keepOldestBy, id, indexName, apply, json,
        };
        command.SetAction((parseResult, cancellationToken) =>
        {
            var connectionString = parseResult.GetValue(connection) ?? Environment.GetEnvironmentVariable(StoreOptions.ConnectionVariable);
            return Shell.RunAsync("dedupe " + operation, [connectionString], async () =>
            {
                if (string.IsNullOrWhiteSpace(connectionString))
                {
                    throw new UsageException($"--connection is required (or set ${StoreOptions.ConnectionVariable}).");
                }

                var tuple = parseResult.GetValue(columns);
                var set = parseResult.GetValue(sortedSet);
                if ((tuple is null) == (set is null))
                {
                    throw new UsageException("give the natural key as either --columns or --sorted-set.");
                }

                var keyColumns = (tuple ?? set)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
                if (keyColumns.Length == 0 || (set is not null && keyColumns.Length < 2))
                {
                    throw new UsageException(set is not null ? "--sorted-set needs at least two columns." : "--columns needs at least one column.");
                }

                var index = parseResult.GetValue(indexName);
                if (index is not null && !IndexNamePattern().IsMatch(index))
                {
                    throw new UsageException($"--index-name '{index}' must be letters, digits and underscores (at most 63), starting with a letter or underscore. Nothing was changed.");
                }

                var request = new DedupeRequest(
                    operation,
                    parseResult.GetValue(table)!,
                    new NaturalKey(keyColumns, set is not null, parseResult.GetValue(separator)!),
                    parseResult.GetValue(keyColumn),
                    parseResult.GetValue(keepOldestBy),
                    parseResult.GetValue(id),
                    index,
                    parseResult.GetValue(apply));
                var jsonTarget = Shell.JsonTarget(parseResult, json);
                await using var db = await DedupeDatabase.OpenAsync(parseResult.GetValue(database)!, connectionString, cancellationToken).ConfigureAwait(false);
                return await new DedupeRun(db, request, Shell.HumanConsole(jsonTarget), jsonTarget, Secrets.Redact(connectionString)).RunAsync(cancellationToken).ConfigureAwait(false);
            });
        });
        return command;
    }

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]{0,62}$", RegexOptions.CultureInvariant)]
    private static partial Regex IndexNamePattern();
}

/// <summary>What one dedupe command was asked to do.</summary>
internal sealed record DedupeRequest(
    string Operation,
    string Table,
    NaturalKey Key,
    string? KeyColumn,
    string? KeepOldestBy,
    string? IdColumn,
    string? IndexName,
    bool Apply);
