using System.Net;
using System.Reflection;

namespace Idem.Gateway.FunctionalTests;

/// <summary>The <c>idem</c> .NET tool as its users run it: a process, its exit codes, its help, and the packed tool installed.</summary>
public sealed class CliTests
{
    [Fact]
    public async Task Idem_gateway_runs_as_a_process_executes_a_same_key_pair_once_and_stops_cleanly()
    {
        await using var upstream = await CountingUpstream.StartAsync();
        await using var cli = await GatewayProcess.StartAsync(GatewayProcess.CliDll,
            ["gateway", "--upstream", upstream.Address.ToString(), "--urls", "http://127.0.0.1:0", "--Idem:Store", "InMemory"]);

        await AssertExecutesOnceAndReplaysAsync(cli, upstream);
        Assert.Equal(0, await cli.StopAsync(TimeSpan.FromSeconds(20)));
    }

    [Fact]
    public async Task Idem_help_and_idem_gateway_help_exit_0_with_the_usage()
    {
        await using var root = GatewayProcess.Start(GatewayProcess.CliDll, ["--help"]);
        await using var gateway = GatewayProcess.Start(GatewayProcess.CliDll, ["gateway", "--help"]);

        Assert.Equal(0, await root.WaitForExitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal(0, await gateway.WaitForExitAsync(TimeSpan.FromSeconds(20)));
        var rootHelp = string.Join('\n', root.Output);
        var gatewayHelp = string.Join('\n', gateway.Output);
        Assert.Contains("idem [command] [options]", rootHelp);
        Assert.Contains("gateway", rootHelp);
        Assert.Contains("idem gateway [options]", gatewayHelp);
        Assert.Contains("--upstream", gatewayHelp);
        Assert.Contains("--urls", gatewayHelp);
        Assert.Empty(root.Error);
        Assert.Empty(gateway.Error);
    }

    [Fact]
    public async Task An_invalid_setting_exits_with_code_1_and_says_which_setting_on_stderr()
    {
        await using var cli = GatewayProcess.Start(GatewayProcess.CliDll,
            ["gateway", "--upstream", "http://127.0.0.1:1", "--urls", "http://127.0.0.1:0", "--Idem:Store", "Nope"]);

        Assert.Equal(1, await cli.WaitForExitAsync(TimeSpan.FromSeconds(20)));
        var error = string.Join('\n', cli.Error);
        Assert.StartsWith("idem gateway: ", error);
        Assert.Contains("Idem:Store", error);
        Assert.Contains("'Nope'", error);
        Assert.Contains("InMemory", error); // says what would have been valid
        Assert.DoesNotContain(cli.Output, l => l.Contains("Now listening", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_tool_packs_installs_from_a_local_feed_and_runs_the_gateway()
    {
        var work = Directory.CreateTempSubdirectory("idem-tool-").FullName;
        try
        {
            var feed = Directory.CreateDirectory(Path.Combine(work, "feed")).FullName;
            var tools = Path.Combine(work, "tools");
            // Only the freshly packed package is visible: the install cannot pick up another Idem.Cli, and needs no network.
            var config = Path.Combine(work, "nuget.config");
            await File.WriteAllTextAsync(config, $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="local" value="{feed}" />
                  </packageSources>
                </configuration>
                """);

            // --no-build: packs the Idem.Cli that was built with these tests (same configuration), instead of a
            // second build of the solution's projects from inside a test run.
            await RunToSuccessAsync("dotnet", ["pack", Path.Combine(RepositoryRoot(), "src", "Idem.Cli", "Idem.Cli.csproj"), "-c", Configuration, "--no-build", "-o", feed, "-nologo"]);
            Assert.Single(Directory.GetFiles(feed, "Idem.Cli.*.nupkg"));
            await RunToSuccessAsync("dotnet", ["tool", "install", "Idem.Cli", "--tool-path", tools, "--configfile", config]);

            var idem = Path.Combine(tools, "idem");
            await using (var help = GatewayProcess.Start(idem, ["--help"]))
            {
                Assert.Equal(0, await help.WaitForExitAsync(TimeSpan.FromSeconds(20)));
                Assert.Contains(help.Output, l => l.Contains("idem [command] [options]", StringComparison.Ordinal));
            }

            await using var upstream = await CountingUpstream.StartAsync();
            await using var installed = await GatewayProcess.StartAsync(idem, ["gateway", "--upstream", upstream.Address.ToString(), "--Idem:Store", "InMemory"]);
            await AssertExecutesOnceAndReplaysAsync(installed, upstream);
            Assert.Equal(0, await installed.StopAsync(TimeSpan.FromSeconds(20)));
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static async Task AssertExecutesOnceAndReplaysAsync(GatewayProcess gateway, CountingUpstream upstream)
    {
        var key = Http.NewKey();
        var first = await gateway.Client.SendAsync(Http.Post("/orders", key));
        var second = await gateway.Client.SendAsync(Http.Post("/orders", key));

        await Http.AssertReplayOfAsync(first, second);
        Assert.Equal(1, upstream.Started("orders"));
    }

    private static async Task RunToSuccessAsync(string fileName, IEnumerable<string> args)
    {
        await using var process = GatewayProcess.Start(fileName, args);
        var code = await process.WaitForExitAsync(TimeSpan.FromSeconds(90));
        Assert.True(code == 0, $"{fileName} {string.Join(' ', args)} exited with {code}.\n{process.Logs}");
    }

    // The configuration these tests were built in (Release or Debug); Idem.Cli was built in the same one.
    private static string Configuration =>
        typeof(CliTests).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Idem.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"No Idem.slnx above {AppContext.BaseDirectory}.");
    }
}
