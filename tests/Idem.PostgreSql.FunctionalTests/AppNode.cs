using System.Net;
using System.Text;
using Idem.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Idem.PostgreSql.FunctionalTests;

/// <summary>
/// One application node: its own <see cref="WebApplication"/> on real Kestrel (free loopback port), its own PostgreSQL
/// store instance and therefore its own connection pool and listener, over a table other nodes may share.
/// </summary>
internal sealed class AppNode : IAsyncDisposable
{
    private readonly WebApplication _app;

    private AppNode(WebApplication app, string name, Uri address)
    {
        _app = app;
        Name = name;
        Address = address;
        Client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1000, PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
        {
            BaseAddress = address,
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    public string Name { get; }

    public Uri Address { get; }

    public HttpClient Client { get; }

    /// <summary>Starts a node whose store keeps records in <paramref name="schema"/> (created on first use).</summary>
    public static async Task<AppNode> StartAsync(
        string connectionString,
        string schema,
        string name,
        Action<WebApplication> map,
        Action<IdempotencyOptions>? configure = null,
        int maxPoolSize = 40)
    {
        // A distinct application name per node: each node's store builds its own data source (pool) from it.
        var nodeConnectionString = new NpgsqlConnectionStringBuilder(connectionString)
        {
            ApplicationName = "idem-" + name,
            MaxPoolSize = maxPoolSize,
        }.ConnectionString;

        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        builder.Services.AddRouting();
        builder.Services.AddIdempotency(o =>
            {
                o.PurgeInterval = TimeSpan.Zero;
                configure?.Invoke(o);
            })
            .UsePostgreSqlStore(nodeConnectionString, o =>
            {
                o.SchemaName = schema;
                o.NotificationChannel = schema + "_changed";
                o.CreateSchemaAutomatically = true;
            });

        var app = builder.Build();
        app.UseRouting();
        app.UseIdempotency();
        map(app);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new AppNode(app, name, new Uri(address));
    }

    public static HttpRequestMessage Post(string path, string key, string body = "{\"amount\":42}")
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.TryAddWithoutValidation("Idempotency-Key", key);
        return request;
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
