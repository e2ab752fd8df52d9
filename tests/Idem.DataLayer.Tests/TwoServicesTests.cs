using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using Idem.TestUtils;
using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace Idem.DataLayer.Tests;

/// <summary>
/// Issue 19, item 3: a web endpoint and a worker (a BackgroundService) in two OS processes on one PostgreSQL both create
/// "the project for build B" with its first version, for 200 builds at once. By the executor's shared key and by
/// create-or-get on the build id, each build gets one project and one version and both processes report the same id,
/// with no error anywhere; the naive check-then-insert, raced the same way in the same test, fails.
/// </summary>
[Collection(SharedPostgreSql.Name)]
public sealed class TwoServicesTests(PostgreSqlServer server, ITestOutputHelper output)
{
    private const int Builds = 200;
    private const int WorkMs = 20;

    [Fact]
    public async Task Web_and_worker_processes_create_each_builds_project_once_by_either_route_and_the_naive_code_does_not()
    {
        foreach (var route in new[] { "executor", "natural" })
        {
            var run = await RaceAsync(route);
            output.WriteLine($"{route}: web errors {run.WebErrors.Count}, worker errors {run.WorkerErrors.Count}, projects {run.Projects}, versions {run.Versions}");
            Assert.Empty(run.WebErrors);
            Assert.Empty(run.WorkerErrors);
            Assert.Equal(Builds, run.Web.Count);
            Assert.Equal(Builds, run.Worker.Count);
            Assert.All(run.Web, pair => Assert.Equal(pair.Value, run.Worker[pair.Key]));
            Assert.Equal(Builds, run.Web.Values.Distinct().Count());
            Assert.Equal(Builds, run.Projects);
            Assert.Equal(Builds, run.Versions);
            Assert.DoesNotContain("23505", run.Logs);
            Assert.DoesNotContain("fail:", run.Logs);
        }

        var naive = await RaceAsync("naive");
        output.WriteLine($"naive: web errors {naive.WebErrors.Count}, worker errors {naive.WorkerErrors.Count}, projects {naive.Projects}, versions {naive.Versions}");
        Assert.NotEmpty(naive.WebErrors.Concat(naive.WorkerErrors));
        Assert.Contains("23505", naive.Logs + string.Join("\n", naive.WorkerErrors));
    }

    private async Task<Run> RaceAsync(string route)
    {
        var connectionString = await server.CreateDatabaseAsync();
        await using (var dataSource = NpgsqlDataSource.Create(connectionString))
        {
            await using var command = dataSource.CreateCommand("""
                CREATE TABLE projects (id uuid PRIMARY KEY, build_id text NOT NULL UNIQUE);
                CREATE TABLE project_versions (id uuid PRIMARY KEY, project_id uuid NOT NULL REFERENCES projects (id), number int NOT NULL, UNIQUE (project_id, number));
                """);
            await command.ExecuteNonQueryAsync();
        }

        var buildIds = Enumerable.Range(1, Builds).Select(i => $"build-{route}-{i}").ToArray();
        var logs = new ConcurrentQueue<string>();
        using var web = StartHost(["web", connectionString, "idem_store", route, WorkMs.ToString()], logs);
        using var worker = StartHost(["worker", connectionString, "idem_store", route, WorkMs.ToString()], logs);
        try
        {
            var url = (await ReadLineAsync(web, l => l.StartsWith("listening ", StringComparison.Ordinal)))["listening ".Length..];
            await ReadLineAsync(worker, l => l == "ready");

            using var client = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromMinutes(1) };
            var webResults = new ConcurrentDictionary<string, Guid>();
            var webErrors = new ConcurrentBag<string>();
            var workerLines = ReadUntilAsync(worker, "done");
            var stdin = new SemaphoreSlim(1);

            // Each build's event reaches both services at the same moment: a line to the worker, a POST to the web host.
            await Parallel.ForEachAsync(buildIds, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (buildId, ct) =>
            {
                await stdin.WaitAsync(ct);
                try
                {
                    await worker.StandardInput.WriteLineAsync(buildId);
                    await worker.StandardInput.FlushAsync(ct);
                }
                finally
                {
                    stdin.Release();
                }

                using var response = await client.PostAsync($"/builds/{buildId}", null, ct);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    webResults[buildId] = (await response.Content.ReadFromJsonAsync<ProjectAnswer>(ct))!.ProjectId;
                }
                else
                {
                    webErrors.Add($"{buildId}: {(int)response.StatusCode}");
                }
            });

            await worker.StandardInput.WriteLineAsync("end");
            await worker.StandardInput.FlushAsync();
            var worked = new Dictionary<string, Guid>();
            var workerErrors = new List<string>();
            foreach (var line in await workerLines.WaitAsync(TimeSpan.FromMinutes(2)))
            {
                var parts = line.Split(' ', 3);
                if (parts[0] == "build")
                {
                    worked[parts[1]] = Guid.Parse(parts[2]);
                }
                else if (parts[0] == "error")
                {
                    workerErrors.Add(line);
                }
            }

            await using var connection = new NpgsqlConnection(connectionString);
            await connection.OpenAsync();
            await using var count = new NpgsqlCommand("SELECT (SELECT count(*) FROM projects), (SELECT count(*) FROM project_versions)", connection);
            await using var reader = await count.ExecuteReaderAsync();
            await reader.ReadAsync();
            return new Run(webResults, [.. webErrors], worked, workerErrors, reader.GetInt64(0), reader.GetInt64(1), string.Join("\n", logs));
        }
        finally
        {
            Stop(web);
            Stop(worker);
        }
    }

    private static Process StartHost(IReadOnlyList<string> arguments, ConcurrentQueue<string> logs)
    {
        // The host is built next to this project (same configuration and framework): .../Idem.DataLayer.ServiceHost/bin/<cfg>/<tfm>/.
        var baseDirectory = AppContext.BaseDirectory;
        var dll = Path.Combine(baseDirectory.Replace("Idem.DataLayer.Tests", "Idem.DataLayer.ServiceHost", StringComparison.Ordinal), "Idem.DataLayer.ServiceHost.dll");
        var startInfo = new ProcessStartInfo("dotnet")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        startInfo.ArgumentList.Add(dll);
        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        var process = Process.Start(startInfo) ?? throw new InvalidOperationException("Could not start the service host.");
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                logs.Enqueue(e.Data);
            }
        };
        process.BeginErrorReadLine();
        return process;
    }

    private static async Task<string> ReadLineAsync(Process process, Func<string, bool> match)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
        {
            if (match(line))
            {
                return line;
            }
        }

        throw new InvalidOperationException($"The service host exited with {process.ExitCode} before it was ready.");
    }

    private static async Task<List<string>> ReadUntilAsync(Process process, string last)
    {
        var lines = new List<string>();
        while (await process.StandardOutput.ReadLineAsync() is { } line && line != last)
        {
            lines.Add(line);
        }

        return lines;
    }

    private static void Stop(Process process)
    {
        if (!process.HasExited)
        {
            process.Kill();
            process.WaitForExit(10_000);
        }
    }

    private sealed record ProjectAnswer(Guid ProjectId);

    private sealed record Run(
        IReadOnlyDictionary<string, Guid> Web,
        IReadOnlyList<string> WebErrors,
        IReadOnlyDictionary<string, Guid> Worker,
        IReadOnlyList<string> WorkerErrors,
        long Projects,
        long Versions,
        string Logs);
}
