using System.Diagnostics;
using System.Reflection;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Xunit;

namespace Idem.AspNetCore.Tests;

/// <summary>API hygiene by reflection, and the telemetry surfaces that have no other test.</summary>
public sealed class ApiTests
{
    // Every shipped package (src/*): a new package is added here and referenced by this project, or the test below fails.
    private static readonly string[] AssemblyNames =
    [
        typeof(IdempotencyExecutor).Assembly.GetName().Name!,
        typeof(IdempotencyOptions).Assembly.GetName().Name!,
        typeof(Idem.Sqlite.SqliteIdempotencyStore).Assembly.GetName().Name!,
        typeof(Idem.PostgreSql.PostgreSqlIdempotencyStore).Assembly.GetName().Name!,
        typeof(Idem.Redis.RedisIdempotencyStore).Assembly.GetName().Name!,
        typeof(Idem.Gateway.GatewayHost).Assembly.GetName().Name!,
        "Idem.Cli",
        typeof(Idem.EntityFrameworkCore.DbSetDataLayerExtensions).Assembly.GetName().Name!,
    ];

    public static TheoryData<string> Assemblies => new(AssemblyNames);

    [Fact]
    public void Every_shipped_package_in_src_is_covered_by_these_tests()
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "Idem.slnx")))
        {
            root = root.Parent;
        }

        Assert.NotNull(root);
        var shipped = Directory.GetFiles(Path.Combine(root.FullName, "src"), "*.csproj", SearchOption.AllDirectories)
            .Select(Path.GetFileNameWithoutExtension)
            .Order(StringComparer.Ordinal)
            .ToArray();
        Assert.Contains("Idem.AspNetCore", shipped); // the scan found the packages
        Assert.Equal([], shipped.Except(AssemblyNames, StringComparer.Ordinal));
        Assert.All(AssemblyNames, name => Assert.NotNull(Assembly.Load(name)));
    }

    [Theory]
    [MemberData(nameof(Assemblies))]
    public void Public_classes_are_sealed_static_or_abstract_by_design(string assemblyName)
    {
        var open = ExportedTypes(assemblyName)
            .Where(t => t.IsClass && !t.IsSealed && !t.IsAbstract)
            .Select(t => t.FullName)
            .ToList();

        Assert.Empty(open);
    }

    [Theory]
    [MemberData(nameof(Assemblies))]
    public void Public_async_methods_take_a_cancellation_token(string assemblyName)
    {
        var missing = ExportedTypes(assemblyName)
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly))
            .Where(m => typeof(Task).IsAssignableFrom(m.ReturnType) || m.ReturnType.Name.StartsWith("ValueTask", StringComparison.Ordinal))
            .Where(m => m.Name != "DisposeAsync" && !m.IsSpecialName && !ImplementsFrameworkInterface(m))
            .Where(m => !m.GetParameters().Any(p => p.ParameterType == typeof(CancellationToken)))
            .Select(m => $"{m.DeclaringType!.Name}.{m.Name}")
            .ToList();

        Assert.Empty(missing);
    }

    // An executable's entry point (the Program class ASP.NET Core makes public for test hosts) is not API.
    private static IEnumerable<Type> ExportedTypes(string assemblyName)
    {
        var assembly = Assembly.Load(assemblyName);
        return assembly.GetExportedTypes().Where(t => t != assembly.EntryPoint?.DeclaringType);
    }

    // Framework contracts (an MVC filter, say) fix their own signatures.
    private static bool ImplementsFrameworkInterface(MethodInfo method) =>
        method.DeclaringType!.GetInterfaces()
            .Where(i => !i.Assembly.GetName().Name!.StartsWith("Idem", StringComparison.Ordinal))
            .Any(i => method.DeclaringType.GetInterfaceMap(i).TargetMethods.Contains(method));

    [Theory]
    [MemberData(nameof(Assemblies))]
    public void Public_types_live_in_the_idem_or_framework_registration_namespaces(string assemblyName)
    {
        var allowed = new[] { "Idem", "Microsoft.Extensions.DependencyInjection", "Microsoft.AspNetCore.Builder" };
        var stray = ExportedTypes(assemblyName)
            .Where(t => !allowed.Any(ns => t.Namespace == ns || t.Namespace!.StartsWith(ns + ".", StringComparison.Ordinal)))
            .Select(t => t.FullName)
            .ToList();

        Assert.Empty(stray);
    }

    [Fact]
    public async Task Each_protected_request_is_one_idem_activity_tagged_with_its_outcome()
    {
        var activities = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == IdempotencyDiagnostics.ActivitySourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { lock (activities) { activities.Add(a); } },
        };
        ActivitySource.AddActivityListener(listener);
        await using var app = await TestApp.StartAsync(a => a.MapPost("/traced", () => TypedResults.Ok()).RequireIdempotency());
        var key = Guid.NewGuid().ToString();

        for (var i = 0; i < 2; i++)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "/traced") { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
            request.Headers.Add("Idempotency-Key", key);
            using var response = await app.Client.SendAsync(request);
        }

        List<Activity> ours;
        lock (activities)
        {
            // The listener is process-wide and other tests run in parallel: keep this test's key only.
            var storeKey = IdempotencyScope.ComputeStoreKey(string.Empty, "POST /traced", key);
            ours = activities.Where(a => a.OperationName == "idem.execute" && (string?)a.GetTagItem("idem.key") == storeKey).ToList();
        }

        Assert.Equal(new[] { "executed", "replayed" }, ours.Select(a => (string)a.GetTagItem(IdempotencyMetrics.OutcomeTag)!).ToArray());
    }

    [Fact]
    public async Task Health_check_reports_an_unavailable_store_as_unhealthy()
    {
        var store = new Idem.TestUtils.CountingStore(new InMemoryIdempotencyStore());
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddIdempotency().UseStore(_ => store);
        services.AddHealthChecks().AddIdempotencyStore();
        await using var provider = services.BuildServiceProvider();
        var health = provider.GetRequiredService<HealthCheckService>();

        Assert.Equal(HealthStatus.Healthy, (await health.CheckHealthAsync()).Status);
        store.FailWith = new TimeoutException("down");
        Assert.Equal(HealthStatus.Unhealthy, (await health.CheckHealthAsync()).Status);
    }
}
