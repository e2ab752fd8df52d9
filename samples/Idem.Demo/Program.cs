// A small order API protected by Idem, its store in the demo's own database (SQLite demo.db, or PostgreSQL): double-clicks,
// retries after timeouts and parallel tabs each create one order. See the README for a curl walk-through.
using Idem.AspNetCore;
using Idem.Demo.DataLayer;
using Microsoft.EntityFrameworkCore;

var builder = WebApplication.CreateBuilder(args);
var idempotency = builder.Services.AddIdempotency(); // the store: in the demo's database (AddDemoData, below)
builder.Services.AddOpenApi();
builder.Services.AddHealthChecks().AddIdempotencyStore();
builder.AddDemoData(idempotency); // orders, communities, chats, builds: EF Core on demo.db, or PostgreSQL with ConnectionStrings:Demo
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

var executions = 0;

// Issue 20: the order row and the stored response commit in one transaction (the joined transaction).
app.MapPost("/orders", async (NewOrder input, DemoDb db, HttpContext context) =>
{
    if (input.Amount <= 0)
    {
        return Results.ValidationProblem(new Dictionary<string, string[]> { ["amount"] = ["Must be positive."] });
    }

    Interlocked.Increment(ref executions);
    var now = DateTimeOffset.UtcNow;
    var order = new Order { Id = Guid.NewGuid(), Item = input.Item, Amount = input.Amount, CreatedAt = now.AddTicks(-(now.Ticks % 10)) }; // microseconds, as PostgreSQL keeps them
    db.Orders.Add(order);
    await db.SaveChangesAsync(context.RequestAborted); // joins Idem's transaction (AddIdempotencyJoinedTransaction); Idem commits it
    await Task.Delay(TimeSpan.FromMilliseconds(input.DelayMs ?? 0), context.RequestAborted); // simulated slow work, after the write
    return Results.Created($"/orders/{order.Id}", order);
}).RequireIdempotency(o => o.JoinedTransaction = true);

app.MapGet("/orders/{id:guid}", async (Guid id, DemoDb db, CancellationToken ct) =>
    await db.Orders.AsNoTracking().SingleOrDefaultAsync(o => o.Id == id, ct) is { } order ? Results.Ok(order) : Results.NotFound());
app.MapDataLayerEndpoints();
app.MapGet("/stats", async (DemoDb db, IdemCounters idem, CancellationToken ct) =>
{
    var data = await DataLayerEndpoints.CountAsync(db, ct);
    return new
    {
        executions = Volatile.Read(ref executions),
        orders = data.Orders,
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
