using System.CommandLine;
using Idem.Gateway;

namespace Idem.Cli.Commands;

/// <summary><c>idem gateway</c>: runs Idem Gateway in front of an upstream.</summary>
internal static class GatewayCommand
{
    public static Command Create()
    {
        var upstream = new Option<string?>("--upstream")
        {
            Description = "The API to protect: one catch-all route with the default policy. Without it, routes come from ReverseProxy:Routes/Clusters in appsettings.json. Example: --upstream http://127.0.0.1:5000",
        };
        var urls = new Option<string?>("--urls")
        {
            Description = $"Where the gateway listens (semicolon separated). Default: {GatewayHost.DefaultUrls}. Example: --urls http://0.0.0.0:8080",
        };
        var gateway = new Command("gateway", "Run Idem Gateway: a reverse proxy that makes POST and PATCH requests with an Idempotency-Key execute exactly once. Any other --Section:Key=value setting (e.g. --Idem:Store=PostgreSql) is passed to the gateway's configuration. Exits 1 when a setting is invalid. Example: idem gateway --upstream http://127.0.0.1:5000 --Idem:Store Sqlite")
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
        return gateway;
    }
}
