namespace Idem.Cli.Common;

/// <summary>
/// Every exit code of <c>idem</c>, in one place (and in README.md): scripts and CI gates read them.
/// </summary>
internal static class ExitCodes
{
    /// <summary>Everything checked is fine (or the requested change was made).</summary>
    public const int Ok = 0;

    /// <summary>A finding: a duplicate execution (storm), a failed check (doctor), duplicates found (dedupe report/lock).</summary>
    public const int Finding = 1;

    /// <summary>Bad usage, a bad name, or a server that could not be reached: nothing was changed.</summary>
    public const int UsageOrConnection = 2;
}

/// <summary>Bad usage the user can fix (a missing option, a bad name): one clear line on stderr, exit 2, nothing changed.</summary>
internal sealed class UsageException(string message) : Exception(message);
