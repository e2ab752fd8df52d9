// Idem's own cost per request, measured in process on BenchmarkDotNet: the same POST /orders pipeline (routing, body
// binding, a 201 with a Location and a JSON body) invoked directly with a fresh HttpContext per request, bare and under
// Idem, with no sockets, kernel or client in the way. The wrk benchmark (run.sh) measures what users see; on a noisy shared
// box its ratios move by several microseconds between runs, which hides the sub-microsecond changes this one resolves.
//
//   dotnet Idem.Benchmarks.InProcess.dll [BenchmarkDotNet arguments, e.g. --filter '*' --job short]
//
// Benchmarks (one request each; bare is the baseline, so BenchmarkDotNet prints each one's ratio to it):
//   Bare           no Idem services, middleware or metadata
//   NoOpStore      Idem's middleware and executor over a store that claims and completes without storing (their cost alone)
//   InMemoryNewKey Idem over the in-memory store, a new key per request (records accumulate, as in a real run)
//   InMemoryReplay one key, replayed from the in-memory store
//   CachedReplay   one key, replayed from the local replay cache (WithLocalReplayCache) in front of a store
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// In process: the benchmarks run in this process, with this project's GC settings, and nothing is generated or restored.
var config = DefaultConfig.Instance.AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance).AsDefault());
BenchmarkSwitcher.FromAssembly(typeof(Idem.Benchmarks.InProcess.PipelineBenchmarks).Assembly).Run(args.Length == 0 ? ["--filter", "*"] : args, config);
