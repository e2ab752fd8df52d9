using System.Collections.Concurrent;
using System.Net;
using Idem.TestUtils;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Idem.Cli.Tests;

/// <summary>One PostgreSQL and one Redis for the whole run (test.sh's, or self-started), and the idem tool packed and installed once.</summary>
public sealed class CliFixture : IAsyncLifetime
{
    public PostgreSqlServer Postgres { get; } = new();

    public RedisServer Redis { get; } = new();

    public InstalledTool Tool { get; } = new();

    public async Task InitializeAsync()
    {
        await Task.WhenAll(Postgres.InitializeAsync(), Redis.InitializeAsync(), Tool.InitializeAsync());
    }

    public async Task DisposeAsync()
    {
        await Tool.DisposeAsync();
        await Redis.DisposeAsync();
        await Postgres.DisposeAsync();
    }
}

[CollectionDefinition(Name)]
public sealed class CliServers : ICollectionFixture<CliFixture>
{
    public const string Name = "idem cli";
}

/// <summary>
/// The idem tool installed the way the README says: <c>dotnet pack</c> into a local feed, then
/// <c>dotnet tool install --tool-path</c> (a temporary one, instead of --global) from only that feed.
/// </summary>
public sealed class InstalledTool : IAsyncLifetime
{
    private string? _work;

    public string Path { get; private set; } = "";

    public async Task InitializeAsync()
    {
        _work = Directory.CreateTempSubdirectory("idem-cli-tool-").FullName;
        var feed = Directory.CreateDirectory(System.IO.Path.Combine(_work, "feed")).FullName;
        var tools = System.IO.Path.Combine(_work, "tools");
        var config = System.IO.Path.Combine(_work, "nuget.config");
        await File.WriteAllTextAsync(config, $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration><packageSources><clear /><add key="local" value="{feed}" /></packageSources></configuration>
            """);
        await RunAsync("dotnet", "pack", System.IO.Path.Combine(IdemCli.RepositoryRoot(), "src", "Idem.Cli", "Idem.Cli.csproj"), "-c", IdemCli.Configuration, "--no-build", "-o", feed, "-nologo");
        await RunAsync("dotnet", "tool", "install", "Idem.Cli", "--tool-path", tools, "--configfile", config);
        Path = System.IO.Path.Combine(tools, "idem");
    }

    public Task DisposeAsync()
    {
        if (_work is not null)
        {
            Directory.Delete(_work, recursive: true);
        }

        return Task.CompletedTask;
    }

    private static async Task RunAsync(string file, params string[] args)
    {
        var info = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = System.Diagnostics.Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await process.WaitForExitAsync(cts.Token);
        Assert.True(process.ExitCode == 0, $"{file} {string.Join(' ', args)} exited {process.ExitCode}\n{await output}\n{await error}");
    }
}

/// <summary>
/// A plain API with no idempotency at all: every POST executes, is counted, waits for <c>X-Delay-Ms</c> (so concurrent
/// requests overlap) and answers 201 with a fresh id, so two executions never answer with the same bytes.
/// </summary>
public sealed class PlainUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, int> _executions = new();

    private PlainUpstream(WebApplication app) => _app = app;

    public Uri Address { get; private set; } = null!;

    public int Executions(string path) => _executions.GetValueOrDefault(path);

    public static async Task<PlainUpstream> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var upstream = new PlainUpstream(app);
        app.MapPost("/{**path}", async (HttpContext context, string path) =>
        {
            var n = upstream._executions.AddOrUpdate(path, 1, static (_, c) => c + 1);
            if (int.TryParse(context.Request.Headers["X-Delay-Ms"], out var delay) && delay > 0)
            {
                await Task.Delay(delay);
            }

            return Results.Json(new { id = Guid.NewGuid(), execution = n }, statusCode: 201);
        });
        await app.StartAsync();
        upstream.Address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        return upstream;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>Idem Gateway in-process on a free loopback port in front of <paramref name="upstream"/>, in-memory store.</summary>
public sealed class Gateway : IAsyncDisposable
{
    private readonly WebApplication _app;

    private Gateway(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
    }

    public Uri Address { get; }

    /// <param name="upstream">Where the gateway forwards.</param>
    /// <param name="sqlitePath">A SQLite store file instead of the in-memory store.</param>
    public static async Task<Gateway> StartAsync(Uri upstream, string? sqlitePath = null)
    {
        string[] store = sqlitePath is null ? ["--Idem:Store", "InMemory"] : ["--Idem:Store", "Sqlite", "--Idem:Sqlite:Path", sqlitePath];
        var app = Idem.Gateway.GatewayHost.Build(
            ["--urls", "http://127.0.0.1:0", .. store, "--Idem:Default:WaitTimeout", "00:01:00", "--upstream", upstream.ToString().TrimEnd('/')],
            builder =>
            {
                builder.Logging.ClearProviders();
            });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new Gateway(app, new Uri(address));
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
