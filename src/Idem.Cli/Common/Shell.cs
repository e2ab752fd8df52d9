using System.CommandLine;
using System.Data.Common;
using System.Net.Http;
using System.Net.Sockets;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;
using StackExchange.Redis;

namespace Idem.Cli.Common;

/// <summary>What every command shares: options built the same way, <c>--json</c>, <c>--yes</c>, and one error policy.</summary>
internal static class Shell
{
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    /// <summary>An option whose help shows a description and an example.</summary>
    public static Option<T> Option<T>(string name, string description, string example, params string[] aliases) =>
        new(name, aliases) { Description = $"{description} Example: {example}" };

    /// <summary><c>--json [FILE]</c>: machine-readable output to FILE, or to stdout (then nothing else is printed there).</summary>
    public static Option<string?> JsonOption() => new("--json")
    {
        Description = "Write the results as JSON to FILE, or to stdout when no FILE is given (the human-readable output is then left out). Example: --json report.json",
        Arity = ArgumentArity.ZeroOrOne,
        HelpName = "FILE",
    };

    public static Option<bool> YesOption() => new("--yes", "-y")
    {
        Description = "Make the change without asking. Without it the command asks on a terminal, and refuses (exit 2) when it cannot ask. Example: --yes",
    };

    /// <summary>Where JSON goes: <see langword="null"/> when <c>--json</c> was not given, <c>"-"</c> for stdout, or a file.</summary>
    public static string? JsonTarget(ParseResult parseResult, Option<string?> json) =>
        parseResult.GetResult(json) is null ? null : parseResult.GetValue(json) ?? "-";

    public static async Task WriteJsonAsync(string target, object value, CancellationToken cancellationToken)
    {
        var text = JsonSerializer.Serialize(value, Json);
        if (target == "-")
        {
            await Console.Out.WriteLineAsync(text.AsMemory(), cancellationToken).ConfigureAwait(false);
            await Console.Out.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await File.WriteAllTextAsync(target, text + "\n", cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The console for human-readable output: stderr when JSON goes to stdout, so stdout stays parseable.</summary>
    public static IAnsiConsole HumanConsole(string? jsonTarget) => jsonTarget == "-" ? Stderr : AnsiConsole.Console;

    private static readonly IAnsiConsole Stderr = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    /// <summary>Asks before a change; <see langword="true"/> with <c>--yes</c>. Without a terminal to ask on, refuses with exit 2.</summary>
    public static bool Confirm(IAnsiConsole console, bool yes, string question)
    {
        if (yes)
        {
            return true;
        }

        if (Console.IsInputRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            throw new UsageException($"{question} Refusing without a terminal to ask on: pass --yes to go ahead (or --dry-run to see what would change).");
        }

        return console.Confirm(question, defaultValue: false);
    }

    /// <summary>
    /// Runs a command's body with the one error policy: usage errors, bad names and unreachable servers print one line on
    /// stderr (secrets masked) and exit 2; a finding is the body's own exit 1.
    /// </summary>
    public static async Task<int> RunAsync(string command, IEnumerable<string?> secrets, Func<Task<int>> body)
    {
        try
        {
            return await body().ConfigureAwait(false);
        }
        catch (Exception ex) when (IsUserFacing(ex))
        {
            await Console.Error.WriteLineAsync($"idem {command}: {Secrets.Redact(Describe(ex), secrets)}").ConfigureAwait(false);
            return ExitCodes.UsageOrConnection;
        }
    }

    private static bool IsUserFacing(Exception ex) => ex is UsageException or DbException or RedisException or HttpRequestException
        or SocketException or TimeoutException or IOException or ArgumentException or InvalidOperationException or UnauthorizedAccessException
        or OperationCanceledException;

    private static string Describe(Exception ex) => ex switch
    {
        UsageException => ex.Message,
        ArgumentException => ex.Message,
        OperationCanceledException => "cancelled; nothing more was changed.",
        DbException or RedisException or SocketException or TimeoutException or HttpRequestException
            => "cannot reach the server: " + Innermost(ex),
        _ => Innermost(ex),
    };

    private static string Innermost(Exception ex)
    {
        var message = ex.Message;
        for (var inner = ex.InnerException; inner is not null; inner = inner.InnerException)
        {
            if (!message.Contains(inner.Message, StringComparison.Ordinal))
            {
                message += " (" + inner.Message + ")";
            }
        }

        return message.ReplaceLineEndings(" ");
    }
}
