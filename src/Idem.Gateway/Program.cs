return await Idem.Gateway.GatewayHost.RunAsync(args).ConfigureAwait(false);
