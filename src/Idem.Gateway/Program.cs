return await Idem.Gateway.GatewayHost.RunAsync(args).ConfigureAwait(false);

// The entry point is not API: without this, ASP.NET Core's generator makes Program public (for test hosts), and two
// referenced executables then clash in an OpenAPI XML-comment cache.
internal sealed partial class Program;
