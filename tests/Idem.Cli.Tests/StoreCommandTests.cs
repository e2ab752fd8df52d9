using System.Text;
using System.Text.Json;
using Idem.PostgreSql;
using Idem.Redis;
using Idem.Sqlite;
using Idem.TestUtils;
using Npgsql;
using StackExchange.Redis;

namespace Idem.Cli.Tests;

/// <summary><c>idem migrate</c>, <c>idem doctor</c> and <c>idem keys</c> against real SQLite files, PostgreSQL and Redis.</summary>
[Collection(CliServers.Name)]
public sealed class StoreCommandTests(CliFixture fixture)
{
    [Fact]
    public async Task Migrate_creates_the_postgresql_schema_once_and_doctor_finds_it_missing_before_and_healthy_after()
    {
        var connection = await fixture.Postgres.CreateDatabaseAsync();
        string[] store = ["--store", "postgresql", "--connection", connection];

        var before = await IdemCli.RunAsync(["doctor", .. store, "--json"]);
        Assert.True(before.ExitCode == 1, before.ToString());
        Assert.Contains(Checks(before), c => c.GetProperty("name").GetString() == "postgresql: schema" && c.GetProperty("status").GetString() == "finding"
            && c.GetProperty("remedy").GetString()!.Contains("idem migrate"));

        var dry = await IdemCli.RunAsync(["migrate", .. store, "--dry-run", "--json"]);
        Assert.True(dry.ExitCode == 0, dry.ToString());
        Assert.Equal(Idem.PostgreSql.PostgreSqlIdempotencyMigrator.LatestVersion, dry.Json.GetProperty("pending").GetInt32());
        Assert.Null(await TableAsync(connection)); // the dry run created nothing

        var first = await IdemCli.RunAsync(["migrate", .. store, "--json"]);
        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.Equal(0, first.Json.GetProperty("versionBefore").GetInt32());
        Assert.Equal(PostgreSqlIdempotencyMigrator.LatestVersion, first.Json.GetProperty("versionAfter").GetInt32());
        Assert.Equal(Idem.PostgreSql.PostgreSqlIdempotencyMigrator.LatestVersion, first.Json.GetProperty("applied").GetArrayLength());
        Assert.Equal("idem_records", await TableAsync(connection));

        var second = await IdemCli.RunAsync(["migrate", .. store, "--json"]);
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Equal(0, second.Json.GetProperty("applied").GetArrayLength());

        var after = await IdemCli.RunAsync(["doctor", .. store, "--json"]);
        Assert.True(after.ExitCode == 0, after.ToString());
        Assert.Equal(20, after.Json.GetProperty("storeLatencyMs").GetProperty("roundTrips").GetInt32());
        Assert.All(Checks(after), c => Assert.Equal("ok", c.GetProperty("status").GetString()));
        Assert.Equal(0L, await CountAsync(connection)); // the throwaway records were deleted
    }

    [Fact]
    public async Task Keys_list_show_and_purge_on_sqlite_use_the_store_and_ask_before_deleting()
    {
        var dir = Directory.CreateTempSubdirectory("idem-keys-").FullName;
        var path = Path.Combine(dir, "idem.db");
        try
        {
            string completedKey, inFlightKey, expiredKey;
            await using (var sqlite = new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = path }))
            {
                (completedKey, inFlightKey, expiredKey) = await SeedAsync(sqlite);
            }

            string[] store = ["--store", "sqlite", "--connection", path];
            await AssertKeysCommandsAsync(store, completedKey, inFlightKey, expiredKey, expiredListed: true);
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Keys_on_postgresql_list_show_and_purge_through_the_same_commands()
    {
        var connection = await fixture.Postgres.CreateDatabaseAsync();
        string completedKey, inFlightKey, expiredKey;
        await using (var pg = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions { ConnectionString = connection, CreateSchemaAutomatically = true }))
        {
            (completedKey, inFlightKey, expiredKey) = await SeedAsync(pg);
        }

        // The password is masked wherever the store is described (the test server trusts any password).
        string[] store = ["--store", "postgresql", "--connection", connection + ";Password=hunter2-secret"];
        var list = await IdemCli.RunAsync(["keys", "list", .. store, "--json"]);
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.DoesNotContain("hunter2-secret", list.Stdout + list.Stderr);
        Assert.Contains("Password=***", list.Json.GetProperty("store").GetString());

        await AssertKeysCommandsAsync(store, completedKey, inFlightKey, expiredKey, expiredListed: true, full: false);
        Assert.Equal(2L, await CountAsync(connection)); // the in-flight claim, and the expired record no purge has run for
    }

    [Fact]
    public async Task Redis_doctor_reports_eviction_and_missing_persistence_and_keys_work_there_too()
    {
        var prefix = RedisServer.NewPrefix("cli");
        string[] store = ["--store", "redis", "--connection", fixture.Redis.Endpoint, "--key-prefix", prefix];
        await using var redis = await ConnectionMultiplexer.ConnectAsync(fixture.Redis.Endpoint + ",allowAdmin=true");
        var server = redis.GetServers()[0];
        var policy = (await server.ConfigGetAsync("maxmemory-policy"))[0].Value;
        try
        {
            await server.ConfigSetAsync("maxmemory-policy", "allkeys-lru");
            var evicting = await IdemCli.RunAsync(["doctor", .. store, "--json"]);
            Assert.True(evicting.ExitCode == 1, evicting.ToString());
            var checks = Checks(evicting);
            Assert.Contains(checks, c => c.GetProperty("name").GetString() == "redis: eviction policy" && c.GetProperty("status").GetString() == "finding"
                && c.GetProperty("detail").GetString()!.Contains("allkeys-lru"));
            // The test server runs without AOF or snapshots (--save '' --appendonly no): a restart loses every record.
            Assert.Contains(checks, c => c.GetProperty("name").GetString() == "redis: persistence" && c.GetProperty("status").GetString() == "finding");
            Assert.Contains(checks, c => c.GetProperty("name").GetString()!.StartsWith("store: claim") && c.GetProperty("status").GetString() == "ok");

            await server.ConfigSetAsync("maxmemory-policy", "noeviction");
            var noEviction = await IdemCli.RunAsync(["doctor", .. store, "--json"]);
            Assert.Contains(Checks(noEviction), c => c.GetProperty("name").GetString() == "redis: eviction policy" && c.GetProperty("status").GetString() == "ok");
        }
        finally
        {
            await server.ConfigSetAsync("maxmemory-policy", policy);
        }

        string completedKey, inFlightKey, expiredKey;
        await using (var store2 = new RedisIdempotencyStore(new RedisIdempotencyStoreOptions { Configuration = fixture.Redis.Endpoint, KeyPrefix = prefix }))
        {
            (completedKey, inFlightKey, expiredKey) = await SeedAsync(store2);
        }

        // Redis deletes a record when its retention ends: the expired one is simply gone.
        await AssertKeysCommandsAsync(store, completedKey, inFlightKey, expiredKey, expiredListed: false, full: false);
    }

    [Fact]
    public async Task Doctor_checks_each_tier_of_the_tiered_store_and_a_url_that_must_replay_a_repeated_key()
    {
        var connection = await fixture.Postgres.CreateDatabaseAsync();
        Assert.Equal(0, (await IdemCli.RunAsync("migrate", "--store", "postgresql", "--connection", connection)).ExitCode);
        await using var upstream = await PlainUpstream.StartAsync();
        await using var gateway = await Gateway.StartAsync(upstream.Address);

        var healthy = await IdemCli.RunAsync("doctor", "--store", "tiered", "--connection", connection, "--redis", fixture.Redis.Endpoint,
            "--url", new Uri(gateway.Address, "/orders").ToString(), "--json");
        Assert.True(healthy.ExitCode == 0, healthy.ToString());
        var names = Checks(healthy).Select(c => c.GetProperty("name").GetString()).ToList();
        Assert.Contains("postgresql: reachable", names);
        Assert.Contains("redis-cache: reachable", names);
        Assert.Contains(names, n => n!.EndsWith("repeated key replayed"));

        // A cache that cannot be reached is a finding (replays slow down), and the round trips still pass through PostgreSQL.
        var deadCache = await IdemCli.RunAsync("doctor", "--store", "tiered", "--connection", connection, "--redis", "127.0.0.1:1,connectTimeout=500", "--json");
        Assert.True(deadCache.ExitCode == 1, deadCache.ToString());
        Assert.Contains(Checks(deadCache), c => c.GetProperty("name").GetString() == "redis-cache: reachable" && c.GetProperty("status").GetString() == "finding");
        Assert.Contains(Checks(deadCache), c => c.GetProperty("name").GetString()!.StartsWith("store: claim") && c.GetProperty("status").GetString() == "ok");

        // The incident: an endpoint with no idempotency at all. The same key twice executes twice, and doctor says so.
        var unprotected = await IdemCli.RunAsync("doctor", "--url", new Uri(upstream.Address, "/orders").ToString(), "--json");
        Assert.True(unprotected.ExitCode == 1, unprotected.ToString());
        Assert.Contains("not protected", Checks(unprotected).Single().GetProperty("detail").GetString());
    }

    [Fact]
    public async Task Bad_usage_and_unreachable_stores_exit_2_with_one_line_and_no_secret()
    {
        var missingFile = await IdemCli.RunAsync("keys", "list", "--store", "sqlite", "--connection", "/nonexistent/idem.db");
        Assert.Equal(2, missingFile.ExitCode);
        Assert.Contains("nothing was created", missingFile.Stderr);
        Assert.False(File.Exists("/nonexistent/idem.db"));

        var unreachable = await IdemCli.RunProcessAsync(["keys", "list", "--store", "postgresql", "--connection", "Host=127.0.0.1;Port=1;Username=u;Password=hunter2-secret;Timeout=2"]);
        Assert.Equal(2, unreachable.ExitCode);
        Assert.DoesNotContain("hunter2-secret", unreachable.Stdout + unreachable.Stderr);
        Assert.Single(unreachable.Stderr.Trim().Split('\n'));

        var noStore = await IdemCli.RunAsync("doctor");
        Assert.Equal(2, noStore.ExitCode);
        var badKind = await IdemCli.RunAsync("keys", "list", "--store", "mongodb", "--connection", "x");
        Assert.Equal(2, badKind.ExitCode);
        Assert.Contains("not one of sqlite, postgresql, redis, tiered", badKind.Stderr);
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgresql")]
    [InlineData("redis")]
    public async Task Keys_list_filters_by_principal_hash_route_state_and_age_and_records_from_before_show_unknown(string kind)
    {
        var dir = Directory.CreateTempSubdirectory("idem-keys-filter-").FullName;
        try
        {
            string[] store;
            IIdempotencyStore opened;
            switch (kind)
            {
                case "sqlite":
                    var path = Path.Combine(dir, "idem.db");
                    store = ["--store", "sqlite", "--connection", path];
                    opened = new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = path });
                    break;
                case "postgresql":
                    var connection = await fixture.Postgres.CreateDatabaseAsync();
                    store = ["--store", "postgresql", "--connection", connection];
                    opened = new PostgreSqlIdempotencyStore(new PostgreSqlIdempotencyStoreOptions { ConnectionString = connection, CreateSchemaAutomatically = true });
                    break;
                default:
                    var prefix = RedisServer.NewPrefix("cli-filter");
                    store = ["--store", "redis", "--connection", fixture.Redis.Endpoint, "--key-prefix", prefix];
                    opened = new RedisIdempotencyStore(new RedisIdempotencyStoreOptions { Configuration = fixture.Redis.Endpoint, KeyPrefix = prefix });
                    break;
            }

            string aliceOrder, alicePayment, aliceInFlight, bobOrder, legacy;
            await using ((IAsyncDisposable)opened)
            {
                aliceOrder = await ClaimAsync(opened, "alice", "POST /orders", "k1", complete: true);
                alicePayment = await ClaimAsync(opened, "alice", "POST /payments", "k2", complete: true);
                aliceInFlight = await ClaimAsync(opened, "alice", "PUT /orders", "k3", complete: false);
                bobOrder = await ClaimAsync(opened, "bob", "POST /orders", "k1", complete: true); // the same client key, another principal
                legacy = await ClaimAsync(opened, "alice", "POST /orders", "k-before", complete: true, withMetadata: false); // as written before the change

                // The record from before still replays.
                var replay = await opened.TryClaimAsync(new ClaimRequest(legacy, "f", Guid.NewGuid(), TimeSpan.FromMinutes(1), TimeSpan.FromHours(1)), default);
                Assert.Equal(ClaimStatus.Completed, replay.Status);
                Assert.Equal("{\"id\":42}", Encoding.UTF8.GetString(replay.Record!.Response!.Body.Span));
            }

            // Without a filter every principal's records are listed (what the filters below must take away).
            var all = await IdemCli.RunAsync(["keys", "list", .. store, "--json"]);
            Assert.Equal(Sorted(aliceOrder, alicePayment, aliceInFlight, bobOrder, legacy), Sorted(Keys(all)));
            var aliceHash = IdempotencyScope.ComputePrincipalHash("alice");
            var records = all.Json.GetProperty("records").EnumerateArray().ToDictionary(r => r.GetProperty("key").GetString()!);
            Assert.Equal(aliceHash, records[aliceOrder].GetProperty("principalHash").GetString());
            Assert.Equal("POST /orders", records[aliceOrder].GetProperty("operation").GetString());
            Assert.False(records[legacy].TryGetProperty("principalHash", out _)); // unknown: null, left out like every null
            Assert.False(records[legacy].TryGetProperty("operation", out _));
            Assert.DoesNotContain(records.Values, r => r.GetRawText().Contains("alice", StringComparison.Ordinal)); // only the hash is kept

            // By principal: alice's records only, never bob's with the same client key, nor the unknown one.
            var byAlice = await IdemCli.RunAsync(["keys", "list", .. store, "--principal", "alice", "--json"]);
            Assert.Equal(Sorted(aliceOrder, alicePayment, aliceInFlight), Sorted(Keys(byAlice)));
            var byBobHash = await IdemCli.RunAsync(["keys", "list", .. store, "--principal-hash", IdempotencyScope.ComputePrincipalHash("bob").ToUpperInvariant(), "--json"]);
            Assert.Equal([bobOrder], Keys(byBobHash));

            // By route (any method), by operation, combined with principal and state.
            Assert.Equal(Sorted(aliceOrder, aliceInFlight, bobOrder), Sorted(Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--route", "/orders", "--json"]))));
            Assert.Equal(Sorted(aliceOrder, bobOrder), Sorted(Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--route", "POST /orders", "--json"]))));
            Assert.Equal([aliceOrder], Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--route", "/orders", "--principal", "alice", "--state", "completed", "--json"])));
            Assert.Equal([aliceInFlight], Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--route", "/orders", "--state", "in-flight", "--json"])));
            Assert.Empty(Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--route", "/order", "--json"]))); // whole routes only

            // By age (written a moment ago with a retention of one hour).
            Assert.Equal(3, Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--principal", "alice", "--newer-than", "00:10:00", "--retention", "01:00:00", "--json"])).Count);
            Assert.Empty(Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--principal", "alice", "--older-than", "00:10:00", "--retention", "01:00:00", "--json"])));

            // The table says "unknown" for the record from before; show decodes both columns.
            var table = await IdemCli.RunAsync(["keys", "list", .. store, "--prefix", legacy[..12]]);
            Assert.True(table.ExitCode == 0, table.ToString());
            Assert.Contains("unknown", table.Stdout, StringComparison.Ordinal);
            var shown = await IdemCli.RunAsync(["keys", "show", bobOrder, .. store, "--json"]);
            Assert.Equal(IdempotencyScope.ComputePrincipalHash("bob"), shown.Json.GetProperty("principalHash").GetString());

            var bad = await IdemCli.RunAsync(["keys", "list", .. store, "--principal-hash", "not-a-hash"]);
            Assert.Equal(2, bad.ExitCode);
            Assert.Contains("32 hexadecimal digits", bad.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Requests_through_the_gateway_are_listed_by_the_principal_that_sent_them()
    {
        var dir = Directory.CreateTempSubdirectory("idem-keys-gateway-").FullName;
        var path = Path.Combine(dir, "idem.db");
        try
        {
            await using (var upstream = await PlainUpstream.StartAsync())
            await using (var gateway = await Gateway.StartAsync(upstream.Address, path))
            using (var client = new HttpClient { BaseAddress = gateway.Address })
            {
                foreach (var (auth, key) in new[] { ("Bearer alice-token", "a1"), ("Bearer alice-token", "a2"), ("Bearer bob-token", "a1") })
                {
                    using var request = new HttpRequestMessage(HttpMethod.Post, "/orders") { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
                    request.Headers.TryAddWithoutValidation("Authorization", auth);
                    request.Headers.Add("Idempotency-Key", key);
                    using var response = await client.SendAsync(request);
                    Assert.Equal(System.Net.HttpStatusCode.Created, response.StatusCode);
                }
            }

            string[] store = ["--store", "sqlite", "--connection", path];
            var all = await IdemCli.RunAsync(["keys", "list", .. store, "--json"]);
            var records = all.Json.GetProperty("records").EnumerateArray().ToList();
            Assert.Equal(3, records.Count);
            Assert.All(records, r => Assert.StartsWith("POST ", r.GetProperty("operation").GetString(), StringComparison.Ordinal));
            var byPrincipal = records.GroupBy(r => r.GetProperty("principalHash").GetString()!).ToDictionary(g => g.Count(), g => g.Key);
            Assert.Equal(2, byPrincipal.Count); // two principals, neither stored raw
            Assert.DoesNotContain("token", all.Stdout, StringComparison.Ordinal);

            var alices = await IdemCli.RunAsync(["keys", "list", .. store, "--principal-hash", byPrincipal[2], "--json"]);
            Assert.Equal(2, Keys(alices).Count);
            var bobs = await IdemCli.RunAsync(["keys", "list", .. store, "--principal-hash", byPrincipal[1], "--route", records[0].GetProperty("operation").GetString()!, "--json"]);
            Assert.Single(Keys(bobs));
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(dir, recursive: true);
        }
    }

    private static List<string> Sorted(params IEnumerable<string> keys) => [.. keys.Order(StringComparer.Ordinal)];

    /// <summary>Claims (and completes) the key of (<paramref name="principal"/>, <paramref name="operation"/>, <paramref name="key"/>) with the metadata the middleware passes, or none.</summary>
    private static async Task<string> ClaimAsync(IIdempotencyStore store, string principal, string operation, string key, bool complete, bool withMetadata = true)
    {
        var storeKey = IdempotencyScope.ComputeStoreKey(principal, operation, key);
        var owner = Guid.NewGuid();
        var claim = new ClaimRequest(storeKey, "f", owner, TimeSpan.FromMinutes(1), TimeSpan.FromHours(1))
        {
            Metadata = withMetadata ? IdempotencyRecordMetadata.Create(principal, operation) : null,
        };
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(claim, default)).Status);
        if (complete)
        {
            Assert.True(await store.CompleteAsync(storeKey, owner, new StoredResponse(201, [], Encoding.UTF8.GetBytes("{\"id\":42}")), TimeSpan.FromHours(1), default));
        }

        return storeKey;
    }

    /// <summary>The whole keys flow on SQLite; the same commands, fewer of them, on PostgreSQL and Redis (CI time).</summary>
    private static async Task AssertKeysCommandsAsync(string[] store, string completedKey, string inFlightKey, string expiredKey, bool expiredListed, bool full = true)
    {
        var completed = await IdemCli.RunAsync(["keys", "list", .. store, "--state", "completed", "--json"]);
        Assert.True(completed.ExitCode == 0, completed.ToString());
        Assert.Equal([completedKey], Keys(completed));
        var inFlight = await IdemCli.RunAsync(["keys", "list", .. store, "--state", "in-flight", "--json"]);
        Assert.Equal([inFlightKey], Keys(inFlight));
        if (!full)
        {
            var shown = await IdemCli.RunAsync(["keys", "show", completedKey, .. store, "--json"]);
            Assert.Equal("{\"id\":42}", shown.Json.GetProperty("response").GetProperty("body").GetString());
            var deleted = await IdemCli.RunAsync(["keys", "purge", completedKey, .. store, "--yes", "--json"]);
            Assert.Equal(1, deleted.Json.GetProperty("deleted").GetInt32());
            Assert.Equal([inFlightKey], Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--json"])));
            return;
        }

        var expired = await IdemCli.RunAsync(["keys", "list", .. store, "--state", "expired", "--json"]);
        Assert.Equal(expiredListed ? [expiredKey] : [], Keys(expired));
        var old = await IdemCli.RunAsync(["keys", "list", .. store, "--older-than", "00:10:00", "--retention", "01:00:00", "--json"]);
        Assert.Empty(Keys(old)); // everything was written a moment ago, with a retention of one hour

        var show = await IdemCli.RunAsync(["keys", "show", completedKey, .. store, "--json"]);
        Assert.True(show.ExitCode == 0, show.ToString());
        var response = show.Json.GetProperty("response");
        Assert.Equal(201, response.GetProperty("statusCode").GetInt32());
        Assert.Equal("{\"id\":42}", response.GetProperty("body").GetString());
        Assert.Equal("application/json", response.GetProperty("headers")[0].GetProperty("value").GetString());
        var byParts = await IdemCli.RunAsync(["keys", "show", .. store, "--principal", "alice", "--operation", "POST /orders", "--idempotency-key", "k-completed", "--json"]);
        Assert.Equal(completedKey, byParts.Json.GetProperty("key").GetString());

        // No terminal to ask on and no --yes: refused, nothing deleted.
        var refused = await IdemCli.RunAsync(["keys", "purge", completedKey, .. store]);
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("--yes", refused.Stderr);
        var dry = await IdemCli.RunAsync(["keys", "purge", completedKey, .. store, "--dry-run", "--json"]);
        Assert.Equal(0, dry.Json.GetProperty("deleted").GetInt32());
        Assert.Equal([completedKey], Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--state", "completed", "--json"])));

        var purged = await IdemCli.RunAsync(["keys", "purge", completedKey, .. store, "--yes", "--json"]);
        Assert.True(purged.ExitCode == 0, purged.ToString());
        Assert.Equal(1, purged.Json.GetProperty("deleted").GetInt32());
        Assert.Empty(Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--state", "completed", "--json"])));

        var expiredPurge = await IdemCli.RunAsync(["keys", "purge", "--expired", .. store, "--yes", "--json"]);
        Assert.True(expiredPurge.ExitCode == 0, expiredPurge.ToString());
        Assert.Equal(expiredListed ? 1 : 0, expiredPurge.Json.GetProperty("deleted").GetInt32());
        Assert.Empty(Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--state", "expired", "--json"])));
        Assert.Equal([inFlightKey], Keys(await IdemCli.RunAsync(["keys", "list", .. store, "--json"]))); // the live claim is untouched
    }

    /// <summary>A completed record, a live in-flight claim, and a record already past its retention, written through the store itself.</summary>
    private static async Task<(string Completed, string InFlight, string Expired)> SeedAsync(IIdempotencyStore store)
    {
        var completed = IdempotencyScope.ComputeStoreKey("alice", "POST /orders", "k-completed");
        var inFlight = IdempotencyScope.ComputeStoreKey("alice", "POST /orders", "k-in-flight");
        var expired = IdempotencyScope.ComputeStoreKey("alice", "POST /orders", "k-expired");
        var owner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(completed, "f", owner, TimeSpan.FromMinutes(1), TimeSpan.FromHours(1)), default)).Status);
        Assert.True(await store.CompleteAsync(completed, owner, new StoredResponse(201, [new("Content-Type", "application/json")], Encoding.UTF8.GetBytes("{\"id\":42}")), TimeSpan.FromHours(1), default));
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(inFlight, "f", Guid.NewGuid(), TimeSpan.FromMinutes(1), TimeSpan.FromHours(1)), default)).Status);
        var expiredOwner = Guid.NewGuid();
        Assert.Equal(ClaimStatus.Claimed, (await store.TryClaimAsync(new ClaimRequest(expired, "f", expiredOwner, TimeSpan.FromMilliseconds(50), TimeSpan.FromMilliseconds(100)), default)).Status);
        Assert.True(await store.CompleteAsync(expired, expiredOwner, new StoredResponse(200, [], Encoding.UTF8.GetBytes("old")), TimeSpan.FromMilliseconds(100), default));
        await Task.Delay(300);
        return (completed, inFlight, expired);
    }

    private static List<string> Keys(CliResult result)
    {
        Assert.True(result.ExitCode == 0, result.ToString());
        return [.. result.Json.GetProperty("records").EnumerateArray().Select(r => r.GetProperty("key").GetString()!)];
    }

    private static List<JsonElement> Checks(CliResult result) => [.. result.Json.GetProperty("checks").EnumerateArray()];

    private static async Task<string?> TableAsync(string connection)
    {
        await using var c = new NpgsqlConnection(connection);
        await c.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT relname::text FROM pg_class WHERE oid = to_regclass('public.idem_records')", c);
        return await command.ExecuteScalarAsync() as string;
    }

    private static async Task<long> CountAsync(string connection)
    {
        await using var c = new NpgsqlConnection(connection);
        await c.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT count(*) FROM idem_records", c);
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
