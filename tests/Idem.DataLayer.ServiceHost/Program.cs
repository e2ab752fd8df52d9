// The two services of issue 19, item 3 (Idem.DataLayer.Tests/TwoServicesTests.cs), in one program started twice:
//   web:    POST /builds/{buildId} creates "the project for build B" with its first version and answers {"projectId"};
//   worker: a BackgroundService that creates the same for every build id it reads on stdin (a build event) and prints
//           "build <buildId> <projectId>" (or "error <buildId> <message>") per build; "end" makes it print "done".
// Both share one PostgreSQL. The route says how they avoid creating a build's project twice:
//   executor: IdempotencyExecutor.ExecuteOnceAsync with the key "project-for-build:<buildId>", on the PostgreSQL store;
//   natural:  create-or-get on projects.build_id, then on project_versions (project_id, number), in one transaction;
//   naive:    check-then-insert, the code the incident had.
// Each build first does <work ms> of simulated work (the build's analysis) before it writes.
//
// Usage: Idem.DataLayer.ServiceHost web|worker <connection string> <store schema> executor|natural|naive <work ms>
// Prints "listening <url>" (web) or "ready" (worker) once it can start.
using System.Globalization;
using System.Net;
using Idem;
using Idem.PostgreSql;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Npgsql;

if (args.Length < 5 || args[0] is not ("web" or "worker") || args[3] is not ("executor" or "natural" or "naive"))
{
    Console.Error.WriteLine("usage: Idem.DataLayer.ServiceHost web|worker <connection string> <store schema> executor|natural|naive <work ms>");
    return 2;
}

var (mode, connectionString, schema, route, workMs) = (args[0], args[1], args[2], args[3], int.Parse(args[4], CultureInfo.InvariantCulture));

var builder = WebApplication.CreateSlimBuilder();
builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
builder.Logging.ClearProviders();
builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
builder.Services.AddIdempotency(o => o.PurgeInterval = TimeSpan.Zero)
    .UsePostgreSqlStore(connectionString, o =>
    {
        o.SchemaName = schema;
        o.NotificationChannel = schema + "_changed";
        o.CreateSchemaAutomatically = true;
    });
builder.Services.AddSingleton(_ => NpgsqlDataSource.Create(connectionString));
builder.Services.AddSingleton(sp => new ProjectsForBuilds(sp.GetRequiredService<NpgsqlDataSource>(), sp.GetRequiredService<IdempotencyExecutor>(), route, workMs));
if (mode == "worker")
{
    builder.Services.AddHostedService(sp => new BuildWorker(sp.GetRequiredService<ProjectsForBuilds>()));
}

var app = builder.Build();
app.MapPost("/builds/{buildId}", async (string buildId, ProjectsForBuilds projects, CancellationToken cancellationToken) =>
    Results.Ok(new { projectId = await projects.CreateAsync(buildId, cancellationToken) }));

await app.StartAsync();
Console.Out.WriteLine(mode == "web"
    ? "listening " + app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()
    : "ready");
Console.Out.Flush();
await app.WaitForShutdownAsync();
return 0;

/// <summary>Creates the project for a build, with its first version, by the chosen route.</summary>
internal sealed class ProjectsForBuilds(NpgsqlDataSource dataSource, IdempotencyExecutor executor, string route, int workMs)
{
    private static readonly CreateOrGetDefinition Projects = new("projects", columns: ["id", "build_id"], keyColumns: ["build_id"], returning: ["id"]);
    private static readonly CreateOrGetDefinition Versions = new("project_versions", columns: ["id", "project_id", "number"], keyColumns: ["project_id", "number"], returning: ["id"]);

    public async Task<Guid> CreateAsync(string buildId, CancellationToken cancellationToken)
    {
        switch (route)
        {
            case "executor":
                // Web and worker derive the same key from the build id: whichever comes second waits for the first and
                // gets its stored result. The work itself is plain inserts in one transaction.
                return await executor.ExecuteOnceAsync(
                    scope: "project-for-build",
                    key: buildId,
                    fingerprint: buildId,
                    work: async execution =>
                    {
                        await Task.Delay(workMs, execution.CancellationToken);
                        return await InsertPlainAsync(buildId, execution.CancellationToken);
                    },
                    cancellationToken: cancellationToken);

            case "natural":
            {
                await Task.Delay(workMs, cancellationToken);
                await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
                await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
                var project = await connection.CreateOrGetAsync(Projects, [Guid.NewGuid(), buildId], r => r.GetGuid(0), transaction, cancellationToken);
                await connection.CreateOrGetAsync(Versions, [Guid.NewGuid(), project.Value, 1], r => r.GetGuid(0), transaction, cancellationToken);
                await transaction.CommitAsync(cancellationToken);
                return project.Value;
            }

            default:
            {
                // The incident: check, work, insert.
                await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
                await using (var check = new NpgsqlCommand("SELECT id FROM projects WHERE build_id = $1", connection) { Parameters = { new() { Value = buildId } } })
                {
                    if (await check.ExecuteScalarAsync(cancellationToken) is Guid existing)
                    {
                        return existing;
                    }
                }

                await Task.Delay(workMs, cancellationToken);
                return await InsertPlainAsync(buildId, cancellationToken);
            }
        }
    }

    private async Task<Guid> InsertPlainAsync(string buildId, CancellationToken cancellationToken)
    {
        var projectId = Guid.NewGuid();
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection, transaction)
        {
            BatchCommands =
            {
                new NpgsqlBatchCommand("INSERT INTO projects (id, build_id) VALUES ($1, $2)") { Parameters = { new() { Value = projectId }, new() { Value = buildId } } },
                new NpgsqlBatchCommand("INSERT INTO project_versions (id, project_id, number) VALUES ($1, $2, 1)") { Parameters = { new() { Value = Guid.NewGuid() }, new() { Value = projectId } } },
            },
        };
        await batch.ExecuteNonQueryAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return projectId;
    }
}

/// <summary>
/// The worker: each line on stdin is a build event (a build id), handled at once, up to 32 at a time, and reported as
/// "build &lt;buildId&gt; &lt;projectId&gt;" or "error &lt;buildId&gt; &lt;message&gt;"; "end" waits for the rest and prints "done".
/// </summary>
internal sealed class BuildWorker(ProjectsForBuilds projects) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await Task.Yield();
        using var slots = new SemaphoreSlim(32);
        var running = new List<Task>();
        while (await Console.In.ReadLineAsync(stoppingToken) is { } buildId && buildId != "end")
        {
            await slots.WaitAsync(stoppingToken);
            running.Add(Task.Run(
                async () =>
                {
                    try
                    {
                        Console.Out.WriteLine($"build {buildId} {await projects.CreateAsync(buildId, stoppingToken)}");
                    }
                    catch (Exception e) when (e is NpgsqlException or IdempotencyException)
                    {
                        Console.Out.WriteLine($"error {buildId} {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
                    }
                    finally
                    {
                        slots.Release();
                    }
                },
                stoppingToken));
        }

        await Task.WhenAll(running);
        Console.Out.WriteLine("done");
        Console.Out.Flush();
    }
}
