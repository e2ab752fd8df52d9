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

    private static readonly AsyncLocal<CliStreams?> s_streams = new();

    /// <summary>Where this invocation writes: the process's stdout/stderr, or (tests) writers of its own.</summary>
    public static CliStreams Streams
    {
        get => s_streams.Value ?? CliStreams.Process;
        set => s_streams.Value = value;
    }

    public static TextWriter Stdout => Streams.Out;

    public static TextWriter Stderr => Streams.Error;

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
            await Stdout.WriteLineAsync(text.AsMemory(), cancellationToken).ConfigureAwait(false);
            await Stdout.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await File.WriteAllTextAsync(target, text + "\n", cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The console for human-readable output: stderr when JSON goes to stdout, so stdout stays parseable.</summary>
    public static IAnsiConsole HumanConsole(string? jsonTarget)
    {
        var streams = Streams;
        if (ReferenceEquals(streams, CliStreams.Process) && jsonTarget != "-")
        {
            return AnsiConsole.Console;
        }

        var writer = jsonTarget == "-" ? streams.Error : streams.Out;
        return AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Interactive = streams.CanPrompt ? InteractionSupport.Detect : InteractionSupport.No,
            Ansi = ReferenceEquals(streams, CliStreams.Process) ? AnsiSupport.Detect : AnsiSupport.No,
        });
    }

    /// <summary>Asks before a change; <see langword="true"/> with <c>--yes</c>. Without a terminal to ask on, refuses with exit 2.</summary>
    public static bool Confirm(IAnsiConsole console, bool yes, string question)
    {
        if (yes)
        {
            return true;
        }

        if (!Streams.CanPrompt || Console.IsInputRedirected || !console.Profile.Capabilities.Interactive)
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
            await Stderr.WriteLineAsync($"idem {command}: {Secrets.Redact(Describe(ex), secrets)}").ConfigureAwait(false);
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

/// <summary>The output streams of one invocation of the tool.</summary>
/// <param name="Out">Results and tables (JSON with <c>--json</c> alone).</param>
/// <param name="Error">Errors, and the tables when JSON goes to stdout.</param>
/// <param name="CanPrompt">Whether a confirmation may be asked (a terminal); <see langword="false"/> refuses without <c>--yes</c>.</param>
internal sealed record CliStreams(TextWriter Out, TextWriter Error, bool CanPrompt)
{
    public static CliStreams Process { get; } = new(Console.Out, Console.Error, CanPrompt: true);
}
