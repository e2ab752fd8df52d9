using System.CommandLine;
using Idem.Gateway;

var upstream = new Option<string?>("--upstream")
{
    Description = "The API to protect, e.g. http://127.0.0.1:5000: one catch-all route with the default policy. Without it, routes come from ReverseProxy:Routes/Clusters in appsettings.json.",
};
var urls = new Option<string?>("--urls")
{
    Description = $"Where the gateway listens (semicolon separated). Default: {GatewayHost.DefaultUrls}.",
};
var gateway = new Command("gateway", "Run Idem Gateway: a reverse proxy that makes POST and PATCH requests with an Idempotency-Key execute exactly once. Any other --Section:Key=value setting (e.g. --Idem:Store=PostgreSql) is passed to the gateway's configuration.")
{
    upstream,
    urls,
};
gateway.TreatUnmatchedTokensAsErrors = false;
gateway.SetAction(async (parseResult, cancellationToken) =>
{
    var args = new List<string>();
    if (parseResult.GetValue(upstream) is { } upstreamUrl)
    {
        args.AddRange(["--upstream", upstreamUrl.TrimEnd('/')]);
    }

    if (parseResult.GetValue(urls) is { } listen)
    {
        args.AddRange(["--urls", listen]);
    }

    args.AddRange(parseResult.UnmatchedTokens);
    return await GatewayHost.RunAsync([.. args], cancellationToken).ConfigureAwait(false);
});

var root = new RootCommand("idem: exactly-once for HTTP APIs.") { gateway };
return await root.Parse(args).InvokeAsync().ConfigureAwait(false);

// The entry point is not API: without this, ASP.NET Core's generator makes Program public (for test hosts), and two
// referenced executables then clash in an OpenAPI XML-comment cache.
internal sealed partial class Program;
