using System.CommandLine;
using Idem.Cli.Commands;
using Idem.Cli.Commands.Dedupe;
using Idem.Cli.Commands.Storm;
using Idem.Cli.Common;

// One root command, one file (or folder) per verb; exit codes are in Common/ExitCodes.cs and README.md.
var root = new RootCommand("idem: exactly-once for HTTP APIs. Run a gateway, prove exactly-once with a storm, check a deployment, inspect keys, migrate stores, repair duplicate rows.")
{
    GatewayCommand.Create(),
    StormCommand.Create(),
    DoctorCommand.Create(),
    KeysCommand.Create(),
    MigrateCommand.Create(),
    DedupeCommand.Create(),
};

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    // Bad usage: one clear line per error on stderr, exit 2, nothing run.
    foreach (var error in parsed.Errors)
    {
        await Console.Error.WriteLineAsync($"idem: {error.Message} (see idem {string.Join(' ', CommandPath(parsed))} --help)").ConfigureAwait(false);
    }

    return ExitCodes.UsageOrConnection;
}

return await parsed.InvokeAsync().ConfigureAwait(false);

static IEnumerable<string> CommandPath(ParseResult parsed)
{
    var names = new List<string>();
    for (var result = parsed.CommandResult; result is not null && result.Command is not RootCommand; result = result.Parent as System.CommandLine.Parsing.CommandResult)
    {
        names.Insert(0, result.Command.Name);
    }

    return names;
}
