using System.Text.RegularExpressions;

namespace Idem.Cli.Tests;

/// <summary>Every command's <c>--help</c> exits 0, describes every option and shows an example of each.</summary>
public sealed partial class HelpTests
{
    [Theory]
    [InlineData("storm")]
    [InlineData("doctor")]
    [InlineData("keys list")]
    [InlineData("keys show")]
    [InlineData("keys purge")]
    [InlineData("migrate")]
    [InlineData("dedupe report")]
    [InlineData("dedupe backfill")]
    [InlineData("dedupe merge")]
    [InlineData("dedupe lock")]
    [InlineData("gateway")]
    public async Task Help_describes_every_option_with_an_example(string command)
    {
        var result = await IdemCli.RunAsync([.. command.Split(' '), "--help"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Empty(result.Stderr);
        Assert.Contains("Example: idem " + command.Split(' ')[0], result.Stdout);
        var options = OptionLine().Matches(result.Stdout).Select(m => m.Value).Where(l => !l.Contains("--help") && !l.Contains("--version")).ToList();
        Assert.NotEmpty(options);
        Assert.All(options, line => Assert.Contains("Example:", line));
    }

    [Fact]
    public async Task The_process_prints_the_root_help_and_exits_0_and_bad_usage_exits_2_with_one_line()
    {
        var help = await IdemCli.RunProcessAsync(["--help"]);
        Assert.Equal(0, help.ExitCode);
        foreach (var verb in new[] { "gateway", "storm", "doctor", "keys", "migrate", "dedupe" })
        {
            Assert.Contains("  " + verb, help.Stdout);
        }

        Assert.Contains("Exit codes: 0 ok; 1 a finding", help.Stdout); // documented where the operator looks first
        Assert.Contains("2 bad usage", help.Stdout);

        var bad = await IdemCli.RunProcessAsync(["keys", "list", "--store", "sqlite", "--limit", "many"]);
        Assert.Equal(2, bad.ExitCode);
        Assert.Single(bad.Stderr.Trim().Split('\n'));
        Assert.Contains("--limit", bad.Stderr);
    }

    // An option's help line (continuation lines are indented further and start without a dash).
    [GeneratedRegex(@"^  -.*$", RegexOptions.Multiline)]
    private static partial Regex OptionLine();
}
