using System.CommandLine;
using Idem.Cli.Common;
using Spectre.Console;

namespace Idem.Cli.Commands;

/// <summary><c>idem migrate</c>: creates or upgrades a store's schema with the store package's own migrator.</summary>
internal static class MigrateCommand
{
    public static Command Create()
    {
        var store = new StoreOptions(required: true);
        var dryRun = Shell.Option<bool>("--dry-run", "Show the schema version found and what would be applied; change nothing.", "--dry-run");
        var json = Shell.JsonOption();
        var command = new Command("migrate", "Create or upgrade the schema of a SQL store (SQLite, PostgreSQL; tiered: its PostgreSQL) with the store's own migrator. Idempotent: a second run applies nothing. Prints what it did. Redis has no schema. Example: idem migrate --store postgresql --connection \"Host=db;Username=idem;Database=idem\"");
        store.AddTo(command);
        command.Options.Add(dryRun);
        command.Options.Add(json);
        command.SetAction((parseResult, cancellationToken) =>
            Shell.RunAsync("migrate", store.SecretsOf(parseResult), async () =>
            {
                var jsonTarget = Shell.JsonTarget(parseResult, json);
                var console = Shell.HumanConsole(jsonTarget);
                var dry = parseResult.GetValue(dryRun);
                await using var opened = store.Open(parseResult, mayCreate: !dry);
                var before = await opened.Admin.DescribeAsync(cancellationToken).ConfigureAwait(false);
                object result;
                if (before.LatestSchemaVersion is null)
                {
                    console.MarkupLine($"{Markup.Escape(opened.Description)}: no schema to migrate (Redis keeps records as hashes).");
                    result = new { store = opened.Description, dryRun = dry, versionBefore = (int?)null, versionAfter = (int?)null, applied = Array.Empty<string>() };
                }
                else if (dry)
                {
                    var pending = Math.Max(0, before.LatestSchemaVersion.Value - (before.SchemaVersion ?? 0));
                    console.MarkupLine($"{Markup.Escape(opened.Description)}: schema version {before.SchemaVersion}, this release creates {before.LatestSchemaVersion}: " +
                        (pending == 0 ? "nothing to apply." : $"would apply {pending} migration(s). Dry run: nothing changed."));
                    result = new { store = opened.Description, dryRun = true, versionBefore = before.SchemaVersion, versionAfter = before.SchemaVersion, pending, applied = Array.Empty<string>() };
                }
                else
                {
                    var migration = await opened.Admin.MigrateAsync(cancellationToken).ConfigureAwait(false);
                    if (migration.Applied.Count == 0)
                    {
                        console.MarkupLine($"{Markup.Escape(opened.Description)}: schema already at version {migration.VersionAfter}; nothing applied.");
                    }
                    else
                    {
                        console.MarkupLine($"{Markup.Escape(opened.Description)}: schema version {migration.VersionBefore} → {migration.VersionAfter}. Applied:");
                        foreach (var line in migration.Applied)
                        {
                            console.MarkupLine($"  {Markup.Escape(line)}");
                        }
                    }

                    result = new { store = opened.Description, dryRun = false, versionBefore = migration.VersionBefore, versionAfter = migration.VersionAfter, applied = migration.Applied };
                }

                if (jsonTarget is not null)
                {
                    await Shell.WriteJsonAsync(jsonTarget, result, cancellationToken).ConfigureAwait(false);
                }

                return ExitCodes.Ok;
            }));
        return command;
    }
}
