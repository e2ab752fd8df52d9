// The benchmark driver behind benchmarks/run.sh and benchmarks/gateway.sh.
//
//   dotnet Idem.Benchmarks.Driver.dll run                                  the HTTP benchmark (settings from the environment, see Settings)
//   dotnet Idem.Benchmarks.Driver.dll gateway [seconds] [connections] [rounds]   Idem Gateway against plain YARP
//
// Shell tools it runs: wrk (the load), taskset (pinning), bash with eng/servers.sh (throwaway PostgreSQL and Redis), dotnet.
using System.Globalization;
using Idem.Benchmarks.Driver;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

var repository = Repository.Find();
using var processes = new ProcessSet();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    processes.StopAll();
    Environment.Exit(130);
};

try
{
    switch (args.FirstOrDefault())
    {
        case "run":
            await new HttpBenchmark(repository, HttpSettings.FromEnvironment(), processes).RunAsync();
            return 0;
        case "gateway":
            await new GatewayBenchmark(repository, GatewaySettings.FromArguments(args[1..]), processes).RunAsync();
            return 0;
        default:
            Console.Error.WriteLine("usage: Idem.Benchmarks.Driver run | gateway [seconds per case and round] [connections] [rounds]");
            return 2;
    }
}
catch (UsageException ex)
{
    Console.Error.WriteLine(ex.Message);
    return 2;
}
finally
{
    processes.StopAll();
}
