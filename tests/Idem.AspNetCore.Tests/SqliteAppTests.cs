using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Idem.AspNetCore.Tests;

/// <summary>The embedded default store behind real apps.</summary>
public sealed class SqliteAppTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("idem-app-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task Two_app_instances_on_one_sqlite_file_execute_each_key_once()
    {
        var path = Path.Combine(_directory, "shared.db");
        var executions = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        void Map(WebApplication app) => app.MapPost("/orders", async (HttpRequest request) =>
        {
            var n = executions.AddOrUpdate(request.Headers["Idempotency-Key"].ToString(), 1, (_, v) => v + 1);
            await Task.Delay(100);
            return TypedResults.Created($"/orders/{Guid.NewGuid()}", new { n });
        }).RequireIdempotency();

        await using var a = await TestApp.StartAsync(Map, store: b => b.UseSqliteStore(path));
        await using var b = await TestApp.StartAsync(Map, store: b => b.UseSqliteStore(path));
        var apps = new[] { a, b };

        for (var storm = 0; storm < 10; storm++)
        {
            var key = $"storm-{storm}-{Guid.NewGuid()}";
            using var start = new ManualResetEventSlim();
            var requests = Enumerable.Range(0, 100).Select(i => Task.Run(async () =>
            {
                start.Wait();
                var request = new HttpRequestMessage(HttpMethod.Post, "/orders") { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
                request.Headers.Add("Idempotency-Key", key);
                using var response = await apps[i % 2].Client.SendAsync(request);
                return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
            })).ToArray();
            start.Set();
            var results = await Task.WhenAll(requests);

            Assert.Equal(1, executions[key]);
            Assert.All(results, r => Assert.Equal(201, r.Item1));
            Assert.Single(results.Select(r => r.Item2).Distinct());
        }
    }

    [Fact]
    public async Task AddIdempotency_with_UseSqliteStore_and_no_path_uses_sqlite_in_the_content_root()
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddIdempotency().UseSqliteStore();
        await using var provider = services.BuildServiceProvider();

        Assert.IsType<Idem.Sqlite.SqliteIdempotencyStore>(provider.GetRequiredService<IIdempotencyStore>());
    }

    [Fact]
    public async Task An_app_without_a_store_fails_at_startup_naming_the_calls_that_choose_one()
    {
        var ex = await Assert.ThrowsAnyAsync<Exception>(() =>
            TestApp.StartAsync(app => app.MapPost("/orders", () => "created").RequireIdempotency(), store: _ => { }));

        Assert.Contains(".UseSqliteStore()", ex.Message);
        Assert.Contains(".UseInMemoryStore()", ex.Message);
    }
}
