namespace Idem.Cli.Tests;

/// <summary><c>idem storm</c>: reports the duplicates of an unprotected API (exit 1) and one execution per round through the gateway (exit 0).</summary>
[Collection(CliServers.Name)]
public sealed class StormTests(CliFixture fixture)
{
    [Fact]
    public async Task Against_a_plain_upstream_storm_reports_the_duplicate_executions_and_exits_1_with_json_and_html()
    {
        await using var upstream = await PlainUpstream.StartAsync();
        var dir = Directory.CreateTempSubdirectory("idem-storm-").FullName;
        try
        {
            var json = Path.Combine(dir, "storm.json");
            var html = Path.Combine(dir, "storm.html");
            var result = await IdemCli.RunAsync(
                "storm", new Uri(upstream.Address, "/orders").ToString(), "--n", "10", "--rounds", "2",
                "--delay-header", "X-Delay-Ms: 200", "--json", json, "--html", html);

            Assert.True(result.ExitCode == 1, result.ToString());
            Assert.Equal(20, upstream.Executions("orders")); // every request executed: nothing protects this API
            using var report = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(json));
            var root = report.RootElement;
            Assert.Equal(2, root.GetProperty("duplicates").GetInt32());
            Assert.Equal(1, root.GetProperty("exitCode").GetInt32());
            foreach (var round in root.GetProperty("rounds").EnumerateArray())
            {
                Assert.Equal(10, round.GetProperty("distinctSuccessBodies").GetInt32());
                Assert.True(round.GetProperty("duplicate").GetBoolean());
                Assert.Equal(10, round.GetProperty("statuses").GetProperty("201").GetInt32());
                Assert.Equal(0, round.GetProperty("replays").GetInt32());
                Assert.True(round.GetProperty("latencyMs").GetProperty("p50").GetDouble() > 0);
            }

            Assert.Contains("duplicate", result.Stdout, StringComparison.OrdinalIgnoreCase);
            var page = await File.ReadAllTextAsync(html);
            Assert.Contains("<svg", page);
            Assert.Contains("<rect", page);
            Assert.Contains("Duplicate executions in 2 of 2 rounds", page);
            Assert.DoesNotContain("<script", page);
            Assert.DoesNotContain("<link", page);
            Assert.DoesNotContain("src=", page); // self-contained: nothing fetched from a CDN
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Through_the_gateway_the_installed_tool_reports_one_execution_per_round_and_exits_0_and_without_a_key_it_does_not()
    {
        await using var upstream = await PlainUpstream.StartAsync();
        await using var gateway = await Gateway.StartAsync(upstream.Address);
        var url = new Uri(gateway.Address, "/orders").ToString();

        // The tool as installed from the packed package (dotnet pack + dotnet tool install --tool-path).
        var protectedRun = await IdemCli.RunProcessAsync(["storm", url, "--n", "20", "--rounds", "3", "--delay-header", "X-Delay-Ms: 200", "--json"], fixture.Tool.Path);

        Assert.True(protectedRun.ExitCode == 0, protectedRun.ToString());
        Assert.Equal(3, upstream.Executions("orders")); // one execution per round, counted at the upstream
        var rounds = protectedRun.Json.GetProperty("rounds").EnumerateArray().ToList();
        Assert.Equal(3, rounds.Count);
        Assert.All(rounds, r =>
        {
            Assert.Equal(1, r.GetProperty("distinctSuccessBodies").GetInt32());
            Assert.False(r.GetProperty("duplicate").GetBoolean());
            Assert.Equal(19, r.GetProperty("replays").GetInt32());
        });

        // The same storm without a key passes straight through the gateway: the duplicates come back, and so does exit 1.
        var unprotected = await IdemCli.RunAsync(["storm", url, "--n", "5", "--rounds", "1", "--no-key", "--delay-header", "X-Delay-Ms: 100", "--json"]);
        Assert.True(unprotected.ExitCode == 1, unprotected.ToString());
        Assert.Equal(5, unprotected.Json.GetProperty("rounds")[0].GetProperty("distinctSuccessBodies").GetInt32());
        Assert.Equal(3 + 5, upstream.Executions("orders"));
    }

    [Fact]
    public async Task A_storm_nobody_answers_exits_2_and_bad_usage_exits_2_with_one_line()
    {
        // As a process: the exit code and the one line on stderr are what a script sees.
        var refused = await IdemCli.RunProcessAsync(["storm", "http://127.0.0.1:1/orders", "--n", "2", "--rounds", "1"]);
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("no request got an answer", refused.Stderr);

        var badUrl = await IdemCli.RunAsync("storm", "not-a-url");
        Assert.Equal(2, badUrl.ExitCode);
        Assert.Single(badUrl.Stderr.Trim().Split('\n'));

        var badN = await IdemCli.RunAsync("storm", "http://127.0.0.1:1/x", "--n", "0");
        Assert.Equal(2, badN.ExitCode);
    }
}
