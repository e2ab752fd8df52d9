// The idem tool; its commands are in Commands/, one file or folder per verb (see IdemApp).
return await Idem.Cli.IdemApp.RunAsync(args).ConfigureAwait(false);
