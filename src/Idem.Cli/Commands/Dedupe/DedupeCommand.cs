using System.CommandLine;

namespace Idem.Cli.Commands.Dedupe;

internal static class DedupeCommand
{
    public static Command Create() => new("dedupe", "stub");
}
