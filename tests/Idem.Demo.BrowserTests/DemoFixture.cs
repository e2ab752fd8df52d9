using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Playwright;

namespace Idem.Demo.BrowserTests;

/// <summary>
/// The demo as the README runs it (its own build output, SQLite in a fresh temp directory, a free loopback port)
/// and one headless Debian Chromium driven by Playwright: no browser is downloaded.
/// </summary>
public sealed class DemoFixture : IAsyncLifetime
{
    // Flags for a root user in a container with no network beyond loopback (see the env notes).
    private static readonly string[] ChromiumArgs =
    [
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    ];

    private readonly string _directory = Directory.CreateTempSubdirectory("idem-demo-browser").FullName;
    private Process? _demo;
    private IPlaywright? _playwright;
    private readonly HttpClient _http = new();

    public Uri Address { get; private set; } = null!;

    public IBrowser Browser { get; private set; } = null!;

    public static string RepositoryRoot
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Idem.slnx")))
            {
                dir = dir.Parent;
            }

            return dir?.FullName ?? throw new InvalidOperationException("Idem.slnx not found above " + AppContext.BaseDirectory);
        }
    }

    public async Task InitializeAsync()
    {
        var chromium = Environment.GetEnvironmentVariable("IDEM_CHROMIUM") ?? "/usr/bin/chromium";
        if (!File.Exists(chromium))
        {
            throw new InvalidOperationException($"{chromium} is missing: apt-get install -y chromium (test.sh installs it).");
        }

        // The demo's build output for this test build's configuration (bin/<Configuration>/<tfm>/).
        var tfmDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/'));
        var dll = Path.Combine(RepositoryRoot, "samples/Idem.Demo/bin", tfmDir.Parent!.Name, tfmDir.Name, "Idem.Demo.dll");
        var port = FreePort();
        Address = new Uri($"http://127.0.0.1:{port}");
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = _directory, RedirectStandardError = true, RedirectStandardOutput = true };
        start.ArgumentList.Add(dll);
        start.ArgumentList.Add("--urls");
        start.ArgumentList.Add(Address.ToString().TrimEnd('/'));
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        start.Environment["Logging__LogLevel__Default"] = "Warning";
        _demo = Process.Start(start)!;
        _demo.OutputDataReceived += (_, _) => { };
        _demo.ErrorDataReceived += (_, _) => { };
        _demo.BeginOutputReadLine();
        _demo.BeginErrorReadLine();

        var deadline = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                using var response = await _http.GetAsync(new Uri(Address, "/stats"));
                if (response.IsSuccessStatusCode)
                {
                    break;
                }
            }
            catch (HttpRequestException)
            {
            }

            if (_demo.HasExited || deadline.Elapsed > TimeSpan.FromSeconds(60))
            {
                throw new InvalidOperationException($"The demo ({dll}) did not start.");
            }

            await Task.Delay(200);
        }

        _playwright = await Playwright.CreateAsync();
        Browser = await _playwright.Chromium.LaunchAsync(new()
        {
            ExecutablePath = chromium,
            Headless = true,
            Args = ChromiumArgs,
        });
    }

    /// <summary>A fresh browser context (its own storage: a new user) and a page at /.</summary>
    public async Task<(IBrowserContext Context, IPage Page)> OpenAsync(int width = 1280, int height = 900)
    {
        var context = await Browser.NewContextAsync(new() { BaseURL = Address.ToString(), ViewportSize = new() { Width = width, Height = height } });
        var page = await context.NewPageAsync();
        await page.GotoAsync("/");
        return (context, page);
    }

    public async Task<JsonElement> StatsAsync()
    {
        var json = await _http.GetStringAsync(new Uri(Address, "/stats"));
        return JsonDocument.Parse(json).RootElement.Clone();
    }

    public async Task<int> StatAsync(string name) => (await StatsAsync()).GetProperty(name).GetInt32();

    public async Task DisposeAsync()
    {
        if (Browser is not null)
        {
            await Browser.CloseAsync();
        }

        _playwright?.Dispose();
        if (_demo is { HasExited: false })
        {
            _demo.Kill(entireProcessTree: true);
            await _demo.WaitForExitAsync();
        }

        _demo?.Dispose();
        _http.Dispose();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

[CollectionDefinition(Name)]
public sealed class DemoServerGroup : ICollectionFixture<DemoFixture>
{
    public const string Name = "demo";
}
