// Usage: Idem.Sqlite.ProcessHelper <database path> <keys> <claims>
// Prints READY, waits for a line on stdin (the start barrier shared with the other process), makes <claims> parallel
// claims spread over <keys> keys, prints "CLAIMED <key>" per claim won and "DONE <claimed> <in flight>", exits 0.
using Idem;
using Idem.Sqlite;

var path = args[0];
var keys = int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture);
var claims = int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);

await using var store = new SqliteIdempotencyStore(new SqliteIdempotencyStoreOptions { Path = path });
Console.WriteLine("READY");
Console.Out.Flush();
if (Console.ReadLine() is null)
{
    return 2;
}

var tasks = new Task<(string Key, ClaimResult Result)>[claims];
for (var i = 0; i < claims; i++)
{
    var key = $"key-{i % keys}";
    tasks[i] = Task.Run(async () =>
        (key, await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromMinutes(5), TimeSpan.FromHours(1)), CancellationToken.None)));
}

var results = await Task.WhenAll(tasks);
var claimed = 0;
var inFlight = 0;
foreach (var (key, result) in results)
{
    if (result.Status == ClaimStatus.Claimed)
    {
        claimed++;
        Console.WriteLine($"CLAIMED {key}");
    }
    else if (result.Status == ClaimStatus.InFlight)
    {
        inFlight++;
    }
}

Console.WriteLine($"DONE {claimed} {inFlight}");
return 0;
