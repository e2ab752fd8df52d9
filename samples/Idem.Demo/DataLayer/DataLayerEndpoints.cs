// The data-layer incidents of issue 19, live: unique slugs for communities (created with their owner's membership and
// subscription in one transaction), chats found by their participants without any key, and the project of a build
// that a web route and an in-process worker both create. See the README's demo section for curl calls.
using System.Threading.Channels;
using Idem.AspNetCore;
using Idem.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Storage;

namespace Idem.Demo.DataLayer;

internal static class DataLayerEndpoints
{
    /// <summary>
    /// The demo's database: PostgreSQL when <c>ConnectionStrings:Demo</c> is set, otherwise the SQLite file
    /// <c>Demo:SqlitePath</c> (default <c>demo.db</c> in the content root). The idempotency store lives in the same
    /// database (its <c>idem_records</c> table beside the demo's tables), so <c>/communities</c> and <c>/orders</c>
    /// commit their rows and the stored response in one transaction (issue 20's joined transaction).
    /// </summary>
    public static void AddDemoData(this WebApplicationBuilder builder, IIdempotencyBuilder idempotency)
    {
        var postgres = builder.Configuration.GetConnectionString("Demo");
        var sqlitePath = Path.GetFullPath(builder.Configuration["Demo:SqlitePath"] ?? "demo.db", builder.Environment.ContentRootPath);
        if (!string.IsNullOrEmpty(postgres))
        {
            idempotency.UsePostgreSqlStore(postgres, o => o.CreateSchemaAutomatically = true);
        }
        else
        {
            idempotency.UseSqliteStore(sqlitePath);
        }

        builder.Services.AddDbContext<DemoDb>(options =>
        {
            if (!string.IsNullOrEmpty(postgres))
            {
                options.UseNpgsql(postgres);
            }
            else
            {
                options.UseSqlite($"Data Source={sqlitePath};Default Timeout=30");
            }

            // SaveChangesAsync joins Idem's transaction under a key; writes outside it are refused, not left outside.
            options.AddIdempotencyJoinedTransaction();
        });
        builder.Services.AddSingleton(Channel.CreateUnbounded<string>());
        builder.Services.AddSingleton<BuildProjects>();
        builder.Services.AddHostedService<BuildWorker>();
        builder.Services.AddHostedService<DemoSchema>();
    }

    public static void MapDataLayerEndpoints(this WebApplication app)
    {
        // Test switches for the black-box crash test (tests/Idem.Demo.DataLayer.Tests/DemoKillTests.cs): a short lease so a
        // killed request's key is taken over in seconds, and Demo:JoinedTransaction=false for its naive variant (the
        // rows commit on their own before the slow work, and the stored response later in Idem's own store).
        var joined = app.Configuration.GetValue("Demo:JoinedTransaction", true);
        var lease = app.Configuration.GetValue<TimeSpan?>("Demo:Lease");
        app.MapPost("/communities", async (NewCommunity input, DemoDb db, HttpContext context) =>
        {
            if (string.IsNullOrWhiteSpace(input.Name))
            {
                return Results.ValidationProblem(new Dictionary<string, string[]> { ["name"] = ["Required."] });
            }

            try
            {
                Slug.FromName(input.Name);
            }
            catch (ArgumentException)
            {
                return Results.ValidationProblem(new Dictionary<string, string[]> { ["name"] = ["Needs at least one letter or digit to make a slug of."] });
            }

            var user = context.Request.Headers["X-User"].FirstOrDefault() ?? "demo-user";
            var ct = context.RequestAborted; // fires on Idem's execution timeout, not on a client's disconnect

            // One transaction for the community, its owner's membership and subscription, and (with a key) the stored
            // response: Idem's joined transaction, which Idem commits with the key's completion after the handler returns.
            await using var own = await db.BeginWritesAsync(context, ct);
            Community community;
            try
            {
                community = await db.Communities.InsertWithUniqueSlugAsync(new Community { Name = input.Name }, c => c.Slug, input.Name, cancellationToken: ct);
            }
            catch (SlugAllocationException e)
            {
                context.Response.Headers.RetryAfter = "1";
                return Results.Problem(statusCode: StatusCodes.Status503ServiceUnavailable, title: "No free slug right now", detail: e.Message);
            }

            db.Memberships.Add(new Membership { CommunityId = community.Id, UserId = user, Role = "owner" });
            db.Subscriptions.Add(new Subscription { CommunityId = community.Id, UserId = user });
            await db.SaveChangesAsync(ct);
            if (own is not null)
            {
                await own.CommitAsync(ct);
            }

            // Simulated slow work after the rows are written, before they commit (on SQLite the write lock is held meanwhile).
            await Task.Delay(TimeSpan.FromMilliseconds(input.DelayMs ?? 0), ct);
            return Results.Created($"/communities/{community.Id}", new { id = community.Id, name = community.Name, slug = community.Slug });
        }).RequireIdempotency(o =>
        {
            o.JoinedTransaction = joined;
            o.Lease = lease;
        });

        app.MapPost("/chats", async (NewChat input, DemoDb db, CancellationToken ct) =>
        {
            string key;
            try
            {
                key = input.Participants is { Length: > 0 } participants && participants.Distinct(StringComparer.Ordinal).Count() >= 2
                    ? NaturalKey.FromSet(participants)
                    : throw new ArgumentException("A chat needs at least two distinct participants.");
            }
            catch (ArgumentException e)
            {
                return Results.ValidationProblem(new Dictionary<string, string[]> { ["participants"] = [e.Message] });
            }

            // No key needed: the sorted participants are the chat's natural key, and the unique index decides.
            var chat = await db.Chats.CreateOrGetAsync(new Chat { ParticipantsKey = key }, c => c.ParticipantsKey, ct);
            var body = new { id = chat.Value.Id, participantsKey = chat.Value.ParticipantsKey };
            return chat.Created ? Results.Created($"/chats/{chat.Value.Id}", body) : Results.Ok(body);
        });

        app.MapPost("/builds", async (NewBuild input, BuildProjects projects, Channel<string> worker, CancellationToken ct) =>
        {
            if (string.IsNullOrWhiteSpace(input.BuildId) || input.BuildId.Length > 200)
            {
                return Results.ValidationProblem(new Dictionary<string, string[]> { ["buildId"] = ["Required, at most 200 characters."] });
            }

            // The worker is told about the build too, and creates its project at the same time: both get the same one.
            await worker.Writer.WriteAsync(input.BuildId, ct);
            var project = await projects.CreateOrGetAsync(input.BuildId, ct);
            var body = new { projectId = project.Value, buildId = input.BuildId };
            return project.Created ? Results.Created($"/builds/{Uri.EscapeDataString(input.BuildId)}", body) : Results.Ok(body);
        });

        app.MapGet("/builds/{buildId}", async (string buildId, DemoDb db, CancellationToken ct) =>
            await db.Projects.AsNoTracking().Where(p => p.BuildId == buildId).Select(p => new { projectId = p.Id, buildId = p.BuildId }).SingleOrDefaultAsync(ct)
                is { } project ? Results.Ok(project) : Results.NotFound());
    }

    /// <summary>
    /// Puts the request's writes in a transaction: Idem's joined transaction when the request has a key (Idem commits
    /// it with the stored response; returns <see langword="null"/>), or a transaction of its own for a keyless request
    /// (or with <c>Demo:JoinedTransaction=false</c>), which the caller commits.
    /// </summary>
    public static async Task<IDbContextTransaction?> BeginWritesAsync(this DemoDb db, HttpContext context, CancellationToken ct)
    {
        if (context.Features.Get<IIdempotencyFeature>()?.Execution is { IsJoinedTransaction: true } execution)
        {
            await db.JoinIdempotentTransactionAsync(execution, ct);
            return null;
        }

        return await db.Database.BeginTransactionAsync(ct);
    }

    /// <summary>The row counts <c>/stats</c> reports, read from the database.</summary>
    public static async Task<DataCounts> CountAsync(DemoDb db, CancellationToken ct) => new(
        await db.Orders.CountAsync(ct),
        await db.Communities.CountAsync(ct),
        await db.Memberships.CountAsync(ct),
        await db.Subscriptions.CountAsync(ct),
        await db.Chats.CountAsync(ct),
        await db.Projects.CountAsync(ct));
}

internal sealed record DataCounts(int Orders, int Communities, int Memberships, int Subscriptions, int Chats, int Projects);

internal sealed record NewCommunity(string? Name, int? DelayMs);

internal sealed record NewChat(string[]? Participants);

internal sealed record NewBuild(string? BuildId);

/// <summary>The project of a build with its first version, by create-or-get on the build id: web and worker share it.</summary>
internal sealed class BuildProjects(IServiceScopeFactory scopes)
{
    public async Task<CreateOrGetResult<Guid>> CreateOrGetAsync(string buildId, CancellationToken ct)
    {
        await using var scope = scopes.CreateAsyncScope();
        var db = scope.ServiceProvider.GetRequiredService<DemoDb>();
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        var project = await db.Projects.CreateOrGetAsync(new Project { BuildId = buildId }, p => p.BuildId, ct);
        await db.ProjectVersions.CreateOrGetAsync(new ProjectVersion { ProjectId = project.Value.Id, Number = 1 }, v => new { v.ProjectId, v.Number }, ct);
        await transaction.CommitAsync(ct);
        return new CreateOrGetResult<Guid>(project.Value.Id, project.Created);
    }
}

/// <summary>The in-process worker: creates the project of every build it is told about, as the web route does.</summary>
internal sealed partial class BuildWorker(Channel<string> builds, BuildProjects projects, ILogger<BuildWorker> logger) : BackgroundService
{
    private int _errors;

    /// <summary>Builds the worker failed on (a test reads it: it must stay 0).</summary>
    public int Errors => Volatile.Read(ref _errors);

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Parallel.ForEachAsync(builds.Reader.ReadAllAsync(stoppingToken), new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = stoppingToken }, async (buildId, ct) =>
        {
            try
            {
                var project = await projects.CreateOrGetAsync(buildId, ct);
                Log.WorkerDone(logger, buildId, project.Value, project.Created);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                Interlocked.Increment(ref _errors);
                Log.WorkerFailed(logger, e, buildId);
            }
        });

    private static partial class Log
    {
        [LoggerMessage(9001, LogLevel.Information, "Worker: build {BuildId} has project {ProjectId} (created by the worker: {Created}).", EventName = "WorkerBuild")]
        public static partial void WorkerDone(ILogger logger, string buildId, Guid projectId, bool created);

        [LoggerMessage(9002, LogLevel.Error, "Worker: build {BuildId} failed.", EventName = "WorkerBuildFailed")]
        public static partial void WorkerFailed(ILogger logger, Exception exception, string buildId);
    }
}

/// <summary>Creates the demo's tables at startup when they are missing (SQLite in WAL mode, so readers never wait for the writer).</summary>
internal sealed class DemoSchema(IServiceScopeFactory scopes) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await using var scope = scopes.CreateAsyncScope();
        var db = scope.ServiceProvider.GetRequiredService<DemoDb>();
        var creator = db.GetService<IRelationalDatabaseCreator>();
        if (!await creator.ExistsAsync(cancellationToken))
        {
            await creator.CreateAsync(cancellationToken);
        }

        if (db.Database.IsSqlite())
        {
            await db.Database.ExecuteSqlRawAsync("PRAGMA journal_mode = WAL", cancellationToken);
        }

        if (!await TableExistsAsync(db, "communities", cancellationToken))
        {
            await creator.CreateTablesAsync(cancellationToken);
        }
        else if (!await TableExistsAsync(db, "orders", cancellationToken))
        {
            // A database from before orders moved into it (issue 20): add the one missing table.
            foreach (var statement in db.Database.GenerateCreateScript().Split(';').Where(s => s.Contains("CREATE TABLE \"orders\"", StringComparison.Ordinal)))
            {
                await db.Database.ExecuteSqlRawAsync(statement, cancellationToken);
            }
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    // Asks the catalog rather than probing the table, so a fresh database logs no failed command.
    private static async Task<bool> TableExistsAsync(DemoDb db, string table, CancellationToken cancellationToken) =>
        await db.Database.SqlQueryRaw<int>(db.Database.IsSqlite()
            ? "SELECT count(*) AS \"Value\" FROM sqlite_master WHERE type = 'table' AND name = {0}"
            : "SELECT count(*)::int AS \"Value\" FROM information_schema.tables WHERE table_name = {0} AND table_schema = current_schema()", table)
            .SingleAsync(cancellationToken) > 0;
}
