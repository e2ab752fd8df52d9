using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Idem.Demo.DataLayer;
using Idem.EntityFrameworkCore;
using Idem.TestUtils;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;
using Xunit.Abstractions;

namespace Idem.Demo.DataLayer.Tests;

/// <summary>
/// Issue 19, item 5: the demo's /communities, /chats, /builds and /stats on its own database (SQLite file, then
/// PostgreSQL), each incident beside its naive variant run against the same database in the same test.
/// </summary>
public abstract class DemoDataLayerTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "idem-demo-" + Guid.NewGuid().ToString("N")[..12]);
    private WebApplicationFactory<Program>? _factory;

    protected HttpClient Client { get; private set; } = null!;

    /// <summary>The setting that points the demo at its database.</summary>
    protected abstract Task<(string Key, string Value)> DatabaseSettingAsync(string root);

    /// <summary>SQL that makes every insert of a subscription for the user 'broken' fail (a real database error).</summary>
    protected abstract string FailingSubscriptionTrigger { get; }

    protected abstract bool IsUniqueViolation(Exception exception);

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_root);
        var (key, value) = await DatabaseSettingAsync(_root);
        _factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseContentRoot(_root); // the Idem store's idem.db and the demo's demo.db live there
            b.UseSetting(key, value);
        });
        Client = _factory.CreateClient();
    }

    public async Task DisposeAsync()
    {
        Client.Dispose();
        if (_factory is not null)
        {
            await _factory.DisposeAsync();
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_root, recursive: true);
    }

    private async Task<T> WithDbAsync<T>(Func<DemoDb, Task<T>> use)
    {
        await using var scope = _factory!.Services.CreateAsyncScope();
        return await use(scope.ServiceProvider.GetRequiredService<DemoDb>());
    }

    private async Task<JsonElement> StatsAsync() => await Client.GetFromJsonAsync<JsonElement>("/stats");

    [Fact]
    public async Task Communities_of_one_name_created_100_times_at_once_get_100_distinct_slugs_and_the_naive_loop_collides()
    {
        var responses = await Task.WhenAll(Enumerable.Range(0, 100).Select(async i =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/communities") { Content = JsonContent.Create(new { name = "My Community" }) };
            request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
            using var response = await Client.SendAsync(request);
            return (response.StatusCode, Body: await response.Content.ReadFromJsonAsync<JsonElement>());
        }));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        var slugs = responses.Select(r => r.Body.GetProperty("slug").GetString()!).ToArray();
        Assert.Equal(100, slugs.Distinct().Count());
        Assert.Contains("my-community", slugs);
        Assert.All(responses, r => Assert.Equal("My Community", r.Body.GetProperty("name").GetString()));
        var stats = await StatsAsync();
        Assert.Equal(100, stats.GetProperty("communities").GetInt32());
        Assert.Equal(100, stats.GetProperty("memberships").GetInt32());
        Assert.Equal(100, stats.GetProperty("subscriptions").GetInt32());

        // The naive slug loop (while exists(slug) slug++; insert) against the same table: unique violations.
        var naiveErrors = new ConcurrentBag<Exception>();
        await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => Task.Run(async () =>
        {
            try
            {
                await WithDbAsync(async db =>
                {
                    var slug = "naive-club";
                    for (var n = 1; await db.Communities.AnyAsync(c => c.Slug == slug); n++)
                    {
                        slug = "naive-club-" + n;
                    }

                    await Task.Delay(10); // what a handler does between its check and its insert
                    db.Communities.Add(new Community { Name = "Naive Club", Slug = slug });
                    return await db.SaveChangesAsync();
                });
            }
            catch (DbUpdateException e)
            {
                naiveErrors.Add(e);
            }
        })));
        output.WriteLine($"naive slug loop: {naiveErrors.Count} unique violations of 50");
        Assert.NotEmpty(naiveErrors);
        Assert.All(naiveErrors, e => Assert.True(IsUniqueViolation(e), e.ToString()));
    }

    [Fact]
    public async Task The_same_key_replays_the_community_and_a_failure_leaves_nothing_half_written_unlike_a_membership_saved_outside_the_transaction()
    {
        var key = Guid.NewGuid().ToString();
        var first = await PostCommunityAsync("Café Zürich", key);
        var replay = await PostCommunityAsync("Café Zürich", key);
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal("cafe-zurich", first.Body.GetProperty("slug").GetString());
        Assert.Equal(first.Body.GetProperty("id").GetGuid(), replay.Body.GetProperty("id").GetGuid());
        Assert.Equal(400, (int)(await PostCommunityAsync("!!!", Guid.NewGuid().ToString())).StatusCode);

        await WithDbAsync(db => db.Database.ExecuteSqlRawAsync(FailingSubscriptionTrigger));
        var failed = await PostCommunityAsync("Broken Club", Guid.NewGuid().ToString(), user: "broken");
        Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        var stats = await StatsAsync();
        Assert.Equal(1, stats.GetProperty("communities").GetInt32());
        Assert.Equal(1, stats.GetProperty("memberships").GetInt32());
        Assert.Equal(1, stats.GetProperty("subscriptions").GetInt32());

        // The naive variant: the membership saved on its own, outside any transaction; the subscription fails after it.
        await Assert.ThrowsAnyAsync<DbUpdateException>(() => WithDbAsync(async db =>
        {
            var community = await db.Communities.InsertWithUniqueSlugAsync(new Community { Name = "Broken Club" }, c => c.Slug, "Broken Club");
            db.Memberships.Add(new Membership { CommunityId = community.Id, UserId = "broken", Role = "owner" });
            await db.SaveChangesAsync();
            db.Subscriptions.Add(new Subscription { CommunityId = community.Id, UserId = "broken" });
            return await db.SaveChangesAsync();
        }));
        stats = await StatsAsync();
        Assert.Equal(2, stats.GetProperty("communities").GetInt32()); // half-written: a community and a membership…
        Assert.Equal(2, stats.GetProperty("memberships").GetInt32());
        Assert.Equal(1, stats.GetProperty("subscriptions").GetInt32()); // …without its subscription
    }

    [Fact]
    public async Task Stats_shows_the_servers_idem_counters_by_outcome_one_executed_and_one_replayed_for_a_key_sent_twice()
    {
        var before = (await StatsAsync()).GetProperty("idem");
        var key = Guid.NewGuid().ToString();
        var first = await PostCommunityAsync("Counted Club", key);
        var replay = await PostCommunityAsync("Counted Club", key);
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(first.Body.GetProperty("id").GetGuid(), replay.Body.GetProperty("id").GetGuid());

        var after = await StatsAsync();
        var idem = after.GetProperty("idem");
        output.WriteLine($"idem before {before}, after {idem}");
        Assert.Equal(1, idem.GetProperty("executed").GetInt64() - before.GetProperty("executed").GetInt64());
        Assert.Equal(1, idem.GetProperty("replayed").GetInt64() - before.GetProperty("replayed").GetInt64());
        foreach (var outcome in new[] { "waited", "conflicted", "mismatched", "rejected", "store_error", "unprotected", "no_key" })
        {
            Assert.Equal(before.GetProperty(outcome).GetInt64(), idem.GetProperty(outcome).GetInt64());
        }

        Assert.Equal(1, after.GetProperty("communities").GetInt32()); // the existing fields are still there
    }

    [Fact]
    public async Task A_chat_posted_50_times_at_once_in_any_order_without_a_key_is_one_chat_and_plain_inserts_collide()
    {
        var responses = await Task.WhenAll(Enumerable.Range(0, 50).Select(async i =>
        {
            using var response = await Client.PostAsJsonAsync("/chats", new { participants = i % 2 == 0 ? new[] { "alice", "bob" } : ["bob", "alice"] });
            return (response.StatusCode, Body: await response.Content.ReadFromJsonAsync<JsonElement>());
        }));

        Assert.Single(responses, r => r.StatusCode == HttpStatusCode.Created);
        Assert.Equal(49, responses.Count(r => r.StatusCode == HttpStatusCode.OK));
        Assert.Single(responses.Select(r => r.Body.GetProperty("id").GetGuid()).Distinct());
        Assert.All(responses, r => Assert.Equal("alice,bob", r.Body.GetProperty("participantsKey").GetString()));
        Assert.Equal(1, (await StatsAsync()).GetProperty("chats").GetInt32());
        Assert.Equal(HttpStatusCode.BadRequest, (await Client.PostAsJsonAsync("/chats", new { participants = new[] { "alice", "alice" } })).StatusCode);

        // The naive variant: a plain insert per request, as a client with no key gets it: duplicates refused by the index (500s).
        var naiveErrors = new ConcurrentBag<Exception>();
        await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => Task.Run(async () =>
        {
            try
            {
                await WithDbAsync(db =>
                {
                    db.Chats.Add(new Chat { ParticipantsKey = "carol,dave" });
                    return db.SaveChangesAsync();
                });
            }
            catch (DbUpdateException e)
            {
                naiveErrors.Add(e);
            }
        })));
        output.WriteLine($"naive plain insert: {naiveErrors.Count} unique violations of 20");
        Assert.Equal(19, naiveErrors.Count);
        Assert.All(naiveErrors, e => Assert.True(IsUniqueViolation(e), e.ToString()));
    }

    [Fact]
    public async Task Builds_created_by_the_web_route_and_the_worker_at_once_have_one_project_each_and_two_naive_services_collide()
    {
        var buildIds = Enumerable.Range(1, 40).Select(i => $"build-{i}").ToArray();
        var responses = await Task.WhenAll(buildIds.Select(async id =>
        {
            using var response = await Client.PostAsJsonAsync("/builds", new { buildId = id });
            return (response.StatusCode, Body: await response.Content.ReadFromJsonAsync<JsonElement>());
        }));
        Assert.All(responses, r => Assert.True(r.StatusCode is HttpStatusCode.Created or HttpStatusCode.OK, r.StatusCode.ToString()));

        // Wait (bounded) for the worker to have handled every build too, then: one project and one version per build.
        var worker = _factory!.Services.GetServices<IHostedService>().OfType<BuildWorker>().Single();
        for (var i = 0; i < 100 && await WithDbAsync(db => db.ProjectVersions.CountAsync()) < buildIds.Length; i++)
        {
            await Task.Delay(100);
        }

        await Task.Delay(500); // let the worker's last create-or-get calls (all finding the project) finish
        Assert.Equal(0, worker.Errors);
        Assert.Equal(buildIds.Length, (await StatsAsync()).GetProperty("projects").GetInt32());
        Assert.Equal(buildIds.Length, await WithDbAsync(db => db.ProjectVersions.CountAsync()));
        foreach (var (status, body) in responses)
        {
            var buildId = body.GetProperty("buildId").GetString()!;
            var shown = await Client.GetFromJsonAsync<JsonElement>($"/builds/{buildId}");
            Assert.Equal(body.GetProperty("projectId").GetGuid(), shown.GetProperty("projectId").GetGuid());
            Assert.Equal(buildId, shown.GetProperty("buildId").GetString());
        }

        var again = await Client.PostAsJsonAsync("/builds", new { buildId = "build-1" });
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Client.GetAsync("/builds/never-built")).StatusCode);

        // The naive variant: two services, each checking then inserting the project of the same builds at once.
        var naiveErrors = new ConcurrentBag<Exception>();
        await Task.WhenAll(Enumerable.Range(1, 20).SelectMany(i => new[] { $"naive-{i}", $"naive-{i}" }).Select(buildId => Task.Run(async () =>
        {
            try
            {
                await WithDbAsync(async db =>
                {
                    if (await db.Projects.AnyAsync(p => p.BuildId == buildId))
                    {
                        return 0;
                    }

                    await Task.Delay(10);
                    db.Projects.Add(new Project { BuildId = buildId });
                    return await db.SaveChangesAsync();
                });
            }
            catch (DbUpdateException e)
            {
                naiveErrors.Add(e);
            }
        })));
        output.WriteLine($"naive two services: {naiveErrors.Count} unique violations of 20 builds");
        Assert.NotEmpty(naiveErrors);
        Assert.All(naiveErrors, e => Assert.True(IsUniqueViolation(e), e.ToString()));
    }

    [Fact]
    public async Task A_keyed_community_and_order_commit_with_their_stored_response_and_a_keyless_one_commits_before_its_slow_work()
    {
        // Issue 20, item 4: with a key, the rows and the stored response commit together after the handler's slow work
        // (delayMs), so no reader sees the rows before the response; the idempotency table is in the demo's database.
        var key = Guid.NewGuid().ToString();
        var (keyedSeenEarly, keyed) = await WatchWhilePostingAsync("/communities", new { name = "Joined Club", delayMs = 1500 }, key, "communities", 1500);
        Assert.Equal(HttpStatusCode.Created, keyed);
        Assert.False(keyedSeenEarly, "a keyed community was visible before its response: it committed outside the joined transaction");
        Assert.Equal(1, (await StatsAsync()).GetProperty("communities").GetInt32());
        var (orderSeenEarly, order) = await WatchWhilePostingAsync("/orders", new { item = "lamp", amount = 3, delayMs = 1500 }, Guid.NewGuid().ToString(), "orders", 1500);
        Assert.Equal(HttpStatusCode.Created, order);
        Assert.False(orderSeenEarly, "a keyed order was visible before its response");
        Assert.Equal(1, (await StatsAsync()).GetProperty("orders").GetInt32());
        Assert.Equal(2, await WithDbAsync(db => db.Database.SqlQueryRaw<int>(
            db.Database.IsSqlite() ? "SELECT count(*) AS \"Value\" FROM idem_records" : "SELECT count(*)::int AS \"Value\" FROM idem_records").SingleAsync()));
        Assert.False(File.Exists(Path.Combine(_root, "idem.db")), "the store must share the demo's database, not keep idem.db");

        // The variant that is not joined: a keyless request commits its own transaction, then does its slow work.
        var (keylessSeenEarly, keyless) = await WatchWhilePostingAsync("/communities", new { name = "Own Club", delayMs = 3000 }, key: null, "communities", 3000);
        Assert.Equal(HttpStatusCode.Created, keyless);
        Assert.True(keylessSeenEarly, "the keyless community's own commit should be visible during its slow work");
    }

    // Posts and, until the answer arrives, polls /stats (bounded): whether the count grew in a read that ended before
    // the handler can have finished its slow work (delayMs after the request was sent), so before any joined commit.
    private async Task<(bool SeenEarly, HttpStatusCode Status)> WatchWhilePostingAsync(string path, object body, string? key, string stat, int delayMs)
    {
        var before = (await StatsAsync()).GetProperty(stat).GetInt32();
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) };
        if (key is not null)
        {
            request.Headers.Add("Idempotency-Key", key);
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var post = Client.SendAsync(request);
        var seenEarly = false;
        for (var i = 0; i < 200 && !post.IsCompleted; i++)
        {
            var count = (await StatsAsync()).GetProperty(stat).GetInt32();
            seenEarly |= count > before && clock.ElapsedMilliseconds < delayMs;
            await Task.Delay(50);
        }

        using var response = await post;
        return (seenEarly, response.StatusCode);
    }

    private async Task<(HttpStatusCode StatusCode, JsonElement Body)> PostCommunityAsync(string name, string key, string? user = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/communities") { Content = JsonContent.Create(new { name }) };
        request.Headers.Add("Idempotency-Key", key);
        if (user is not null)
        {
            request.Headers.Add("X-User", user);
        }

        using var response = await Client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.StartsWith('{') ? JsonDocument.Parse(text).RootElement.Clone() : default);
    }
}

public sealed class SqliteDemoDataLayerTests(ITestOutputHelper output) : DemoDataLayerTests(output)
{
    protected override Task<(string Key, string Value)> DatabaseSettingAsync(string root) =>
        Task.FromResult(("Demo:SqlitePath", Path.Combine(root, "demo.db")));

    protected override string FailingSubscriptionTrigger =>
        "CREATE TRIGGER fail_subscription BEFORE INSERT ON subscriptions WHEN NEW.\"UserId\" = 'broken' BEGIN SELECT RAISE(ABORT, 'subscriptions are down'); END;";

    protected override bool IsUniqueViolation(Exception exception) => Idem.Sqlite.SqliteDataLayerExtensions.IsUniqueViolation(exception);
}

[CollectionDefinition(Name)]
public sealed class SharedPostgreSql : ICollectionFixture<PostgreSqlServer>
{
    public const string Name = "SharedPostgreSql";
}

[Collection(SharedPostgreSql.Name)]
public sealed class PostgreSqlDemoDataLayerTests(PostgreSqlServer server, ITestOutputHelper output) : DemoDataLayerTests(output)
{
    protected override async Task<(string Key, string Value)> DatabaseSettingAsync(string root) =>
        ("ConnectionStrings:Demo", await server.CreateDatabaseAsync());

    protected override string FailingSubscriptionTrigger => """
        CREATE FUNCTION fail_subscription() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'subscriptions are down'; END $$;
        CREATE TRIGGER fail_subscription BEFORE INSERT ON subscriptions FOR EACH ROW WHEN (NEW."UserId" = 'broken') EXECUTE FUNCTION fail_subscription();
        """;

    protected override bool IsUniqueViolation(Exception exception) => Idem.PostgreSql.PostgreSqlDataLayerExtensions.IsUniqueViolation(exception);
}
