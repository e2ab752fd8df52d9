using System.CommandLine;
using Idem.Cli.Commands;
using Idem.Cli.Commands.Dedupe;
using Idem.Cli.Commands.Storm;
using Idem.Cli.Common;

namespace Idem.Cli;

/// <summary>The tool: one root command, one file (or folder) per verb; exit codes in <see cref="ExitCodes"/> and README.md.</summary>
internal static class IdemApp
{
    public static RootCommand CreateRoot() => new("idem: exactly-once for HTTP APIs. Run a gateway, prove exactly-once with a storm, check a deployment, inspect keys, migrate stores, repair duplicate rows. Exit codes: 0 ok; 1 a finding (a duplicate execution, a failed doctor check, duplicates to repair); 2 bad usage or a store or URL that cannot be reached (one line on stderr, nothing changed). Example: idem doctor --store sqlite --connection idem.db")
    {
        GatewayCommand.Create(),
        StormCommand.Create(),
        DoctorCommand.Create(),
        KeysCommand.Create(),
        MigrateCommand.Create(),
        DedupeCommand.Create(),
    };

    /// <summary>Runs the tool with <paramref name="args"/>, writing to <paramref name="streams"/> (the process's own when <see langword="null"/>).</summary>
    public static async Task<int> RunAsync(string[] args, CliStreams? streams = null, CancellationToken cancellationToken = default)
    {
        streams ??= CliStreams.Process;
        Shell.Streams = streams;
        var parsed = CreateRoot().Parse(args);
        if (parsed.Errors.Count > 0)
        {
            // Bad usage: one clear line per error on stderr, exit 2, nothing run.
            foreach (var error in parsed.Errors)
            {
                await streams.Error.WriteLineAsync($"idem: {error.Message} (see idem {string.Join(' ', CommandPath(parsed))} --help)").ConfigureAwait(false);
            }

            return ExitCodes.UsageOrConnection;
        }

        return await parsed.InvokeAsync(new InvocationConfiguration { Output = streams.Out, Error = streams.Error }, cancellationToken).ConfigureAwait(false);
    }

    private static List<string> CommandPath(ParseResult parsed)
    {
        var names = new List<string>();
        for (var result = parsed.CommandResult; result is not null && result.Command is not RootCommand; result = result.Parent as System.CommandLine.Parsing.CommandResult)
        {
            names.Insert(0, result.Command.Name);
        }

        return names;
    }
}
