// The crash host of issue 20 (tests/Idem.JoinedTransaction.CrashTests): runs one two-phase request and kills itself
// with SIGKILL at the named point. Deliberately tiny (no web host, no DI): one process per crash, so start-up is its cost.
//
// Usage: Idem.JoinedTransaction.CrashHost <sqlite|postgres> <path or connection string> <schema> <foreign url> <joined 1|0> <key> <crash point>
// Prints "response <json>" when it gets that far; exits 137 (SIGKILL) at the crash point.
using System.Diagnostics;
using System.Text.Json;
using Idem.JoinedTransaction.CrashHost;

if (args.Length != 7)
{
    Console.Error.WriteLine("usage: Idem.JoinedTransaction.CrashHost <sqlite|postgres> <path or connection string> <schema> <foreign url> <joined 1|0> <key> <crash point>");
    return 2;
}

var (database, connection, schema, foreign, joined, key, crashAt) = (args[0], args[1], args[2], new Uri(args[3]), args[4] == "1", args[5], args[6]);
var store = CrashWorkload.CreateStore(database, connection, schema);
var workload = new CrashWorkload(database, connection, schema, foreign, joined);
var response = await workload.RunAsync(CrashWorkload.CreateExecutor(store), key, point =>
{
    if (point == crashAt)
    {
        // SIGKILL: no finally blocks, no disposal, no goodbye to the database.
        Process.GetCurrentProcess().Kill();
        Thread.Sleep(Timeout.Infinite);
    }
});

Console.Out.WriteLine("response " + JsonSerializer.Serialize(response));
Console.Out.Flush();
return 0;
