// A small order API protected by Idem on its embedded default store (SQLite, idem.db): double-clicks,
// retries after timeouts and parallel tabs each create one order. See the README for a curl walk-through.
using System.Collections.Concurrent;
using Idem.AspNetCore;
using Idem.Demo.DataLayer;

var builder = WebApplication.CreateBuilder(args);
builder.Services.AddIdempotency().UseSqliteStore(); // SQLite in ./idem.db (package Idem.Sqlite)
builder.Services.AddOpenApi();
builder.Services.AddHealthChecks().AddIdempotencyStore();
builder.AddDemoData(); // communities, chats, builds: EF Core on demo.db, or PostgreSQL with ConnectionStrings:Demo
builder.Services.AddSingleton<IdemCounters>(); // idem.requests by outcome, for /stats and the page (MeterListener)

var app = builder.Build();
app.Services.GetRequiredService<IdemCounters>().Start();
// The demo page at / (wwwroot and clients/js, copied beside the binary at build time).
var page = new Microsoft.Extensions.FileProviders.PhysicalFileProvider(Path.Combine(AppContext.BaseDirectory, "wwwroot"));
app.UseDefaultFiles(new DefaultFilesOptions { FileProvider = page });
app.UseStaticFiles(new StaticFileOptions { FileProvider = page });
app.UseRouting();
app.UseIdempotency();
app.MapOpenApi();
app.MapIdempotencyHealthChecks("/healthz");   // JSON report by tier, /healthz/live, /healthz/ready

var orders = new ConcurrentDictionary<Guid, Order>();
var executions = 0;

app.MapPost("/orders", async (NewOrder input, HttpContext context) =>
{
    if (input.Amount <= 0)
    {
        return Results.ValidationProblem(new Dictionary<string, string[]> { ["amount"] = ["Must be positive."] });
    }

    Interlocked.Increment(ref executions);
    await Task.Delay(TimeSpan.FromMilliseconds(input.DelayMs ?? 0), context.RequestAborted); // simulate slow work
    var order = new Order(Guid.NewGuid(), input.Item, input.Amount, DateTimeOffset.UtcNow);
    orders[order.Id] = order;
    return Results.Created($"/orders/{order.Id}", order);
}).RequireIdempotency();

app.MapGet("/orders/{id:guid}", (Guid id) => orders.TryGetValue(id, out var order) ? Results.Ok(order) : Results.NotFound());
app.MapDataLayerEndpoints();
app.MapGet("/stats", async (DemoDb db, IdemCounters idem, CancellationToken ct) =>
{
    var data = await DataLayerEndpoints.CountAsync(db, ct);
    return new
    {
        executions = Volatile.Read(ref executions),
        orders = orders.Count,
        communities = data.Communities,
        memberships = data.Memberships,
        subscriptions = data.Subscriptions,
        chats = data.Chats,
        projects = data.Projects,
        idem = idem.Snapshot(), // the server's idem.requests by idem.outcome
    };
});

app.Run();

internal sealed record NewOrder(string Item, decimal Amount, int? DelayMs);

internal sealed record Order(Guid Id, string Item, decimal Amount, DateTimeOffset CreatedAt);
