using System.Security.Claims;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features.Authentication;

namespace Idem.AspNetCore;

/// <summary>App-wide settings of the idempotency middleware. Endpoint settings (<see cref="IdempotencyEndpointOptions"/>) override the policy parts.</summary>
public sealed class IdempotencyOptions
{
    /// <summary>The request header that carries the key.</summary>
    /// <value><c>Idempotency-Key</c>.</value>
    public string HeaderName { get; set; } = "Idempotency-Key";

    /// <summary>The policy of endpoints that do not override it: retention, lease, waiting, timeouts, stored statuses and sizes, failure mode.</summary>
    public IdempotencyPolicy DefaultPolicy { get; set; } = IdempotencyPolicy.Default;

    /// <summary>The methods protected by default. PUT and DELETE are idempotent by definition and opt-in per endpoint.</summary>
    /// <value>POST and PATCH.</value>
    public ISet<string> Methods { get; } = new HashSet<string>(StringComparer.OrdinalIgnoreCase) { HttpMethods.Post, HttpMethods.Patch };

    /// <summary>Whether a request without a key is refused (400) instead of passing through unprotected.</summary>
    /// <value><see langword="false"/>, so that adding Idem breaks no existing client.</value>
    public bool RequireKey { get; set; }

    /// <summary>
    /// Who sent the request: keys of different principals never share a record. Returned values are hashed, never stored.
    /// </summary>
    /// <value>The authenticated user's <see cref="ClaimTypes.NameIdentifier"/>, <c>sub</c> claim or name; empty for anonymous callers.</value>
    public Func<HttpContext, string> PrincipalResolver { get; set; } = DefaultPrincipal;

    /// <summary>Request headers that take part in the fingerprint besides method, path, query, content type and body.</summary>
    public IList<string> FingerprintHeaders { get; } = [];

    /// <summary>
    /// Whether JSON bodies are fingerprinted by their meaning (properties sorted, whitespace dropped) instead of their bytes,
    /// so a client that re-serializes the same object differently on a retry is not refused with 422.
    /// </summary>
    /// <value><see langword="false"/>: bytes are compared exactly.</value>
    public bool CanonicalJsonFingerprint { get; set; }

    /// <summary>The largest request body accepted on a protected request (it is hashed before the claim); larger ones get 413.</summary>
    /// <value>10 MiB.</value>
    public long MaxRequestBodyBytes { get; set; } = 10 * 1024 * 1024;

    /// <summary>Request bodies up to this size are buffered in memory, larger ones in a temporary file.</summary>
    /// <value>64 KiB.</value>
    public int RequestBufferThreshold { get; set; } = 64 * 1024;

    /// <summary>Response headers stored and replayed besides the built-in allow-list
    /// (Content-Type, Content-Encoding, Content-Language, Location, ETag, Last-Modified, Cache-Control, Vary).
    /// Set-Cookie and hop-by-hop headers are refused.</summary>
    public IList<string> ReplayedHeaders { get; } = [];

    /// <summary>The correlation header: accepted from the client when valid, generated otherwise, echoed on every protected response.</summary>
    /// <value><c>X-Request-Id</c>.</value>
    public string CorrelationIdHeader { get; set; } = "X-Request-Id";

    /// <summary>
    /// How often expired records are purged in the background; <see cref="TimeSpan.Zero"/> turns the purge off. Sets
    /// <see cref="IdempotencyPurgeOptions.Interval"/> of the purge that <c>AddIdempotencyCore()</c> registers.
    /// </summary>
    /// <value>1 minute.</value>
    public TimeSpan PurgeInterval { get; set; } = TimeSpan.FromMinutes(1);

    internal static string DefaultPrincipal(HttpContext context)
    {
        // Read through the feature: HttpContext.User would create an empty principal on every anonymous request.
        var user = context.Features.Get<IHttpAuthenticationFeature>()?.User;
        if (user?.Identity?.IsAuthenticated != true)
        {
            return string.Empty;
        }

        return user.FindFirst(ClaimTypes.NameIdentifier)?.Value
            ?? user.FindFirst("sub")?.Value
            ?? user.Identity.Name
            ?? string.Empty;
    }

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(HeaderName))
        {
            throw new InvalidOperationException("IdempotencyOptions.HeaderName must not be empty.");
        }

        ArgumentNullException.ThrowIfNull(DefaultPolicy);
        DefaultPolicy.Validate();
        ArgumentNullException.ThrowIfNull(PrincipalResolver);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxRequestBodyBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(RequestBufferThreshold);
        ArgumentOutOfRangeException.ThrowIfLessThan(PurgeInterval, TimeSpan.Zero);
        IdempotencyEndpointOptions.ThrowIfNotMethodNames(Methods, nameof(Methods));
        foreach (var header in ReplayedHeaders)
        {
            if (ResponseHeaderAllowList.IsForbidden(header))
            {
                throw new InvalidOperationException($"The response header '{header}' may never be stored or replayed (cookies and hop-by-hop headers belong to one response).");
            }
        }
    }
}

/// <summary>
/// Per-endpoint settings; anything left <see langword="null"/> comes from <see cref="IdempotencyOptions"/>. The one shape
/// of a protected operation's settings: set in code (<c>RequireIdempotency(o => …)</c>), or bound from configuration
/// (every setting but <see cref="ShouldStore"/> binds; Idem Gateway's <c>Idem:Default</c> and <c>Idem:Routes:&lt;id&gt;</c>
/// sections are this type). A new setting is a property here plus its line in <see cref="Overlay"/> and, for a policy
/// setting, in the conversion to <see cref="IdempotencyPolicy"/>, both in this class.
/// </summary>
public sealed class IdempotencyEndpointOptions
{
    // RFC 9110 token characters, which is what a method name is made of.
    private static readonly System.Buffers.SearchValues<char> HttpTokenCharacters =
        System.Buffers.SearchValues.Create("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");

    /// <summary>
    /// <see langword="false"/> leaves the endpoint unprotected, whatever a route group or the defaults say (Idem
    /// Gateway: plain proxying for the route).
    /// </summary>
    /// <value><see langword="null"/>: protected.</value>
    public bool? Enabled { get; set; }

    /// <summary>Whether a request without a key is refused with 400.</summary>
    public bool? RequireKey { get; set; }

    /// <summary>The protected methods, for example to opt PUT or DELETE in.</summary>
    public IReadOnlyCollection<string>? Methods { get; set; }

    /// <summary>Wait for an in-flight owner, or reject at once with 409.</summary>
    public ConflictBehavior? ConflictBehavior { get; set; }

    /// <summary>How long responses are kept.</summary>
    public TimeSpan? Retention { get; set; }

    /// <summary>How long a claim holds without renewal.</summary>
    public TimeSpan? Lease { get; set; }

    /// <summary>How long a waiting request waits.</summary>
    public TimeSpan? WaitTimeout { get; set; }

    /// <summary>How long the handler may run.</summary>
    public TimeSpan? ExecutionTimeout { get; set; }

    /// <summary>Which response statuses are stored; others release the key. Set this or <see cref="StoredStatuses"/>, not both.</summary>
    public Func<int, bool>? ShouldStore { get; set; }

    /// <summary>
    /// Which response statuses are stored, as text (for configuration): statuses (<c>201</c>), classes (<c>2xx</c>) or
    /// ranges (<c>200-299</c>), comma separated; others release the key. Set this or <see cref="ShouldStore"/>, not both.
    /// </summary>
    public string? StoredStatuses { get; set; }

    /// <summary>The largest response body stored.</summary>
    public int? MaxStoredBodyBytes { get; set; }

    /// <summary>Fail closed (503) or open (unprotected, counted) when the store cannot answer.</summary>
    public StoreFailureMode? StoreFailureMode { get; set; }

    /// <summary>
    /// Runs the handler in a joined transaction (see <see cref="IdempotencyPolicy.JoinedTransaction"/>): its writes
    /// through <c>HttpContext.GetIdempotentExecution().GetTransactionAsync()</c> (or an Idem.EntityFrameworkCore
    /// <c>DbContext</c>) and the key's completion commit together, and the response is held until that commit succeeded.
    /// </summary>
    public bool? JoinedTransaction { get; set; }

    /// <summary>
    /// Opt-in protection for clients that send no key: the key is derived from the principal, method, route and
    /// request fingerprint and kept for this window only, so a double-click or two tabs still execute once while a
    /// deliberate repeat after the window executes again. <see langword="null"/> (the default) lets keyless requests pass.
    /// </summary>
    public TimeSpan? ImplicitKeyWindow { get; set; }

    /// <summary>
    /// Throws <see cref="ArgumentException"/> when a value set here is out of range (checked again at startup over the
    /// application's defaults; each setting is checked on its own, so settings valid here are valid over any valid defaults).
    /// </summary>
    /// <exception cref="ArgumentException">A setting is out of range, unparsable, or contradicts another.</exception>
    public void Validate() => Validate(IdempotencyPolicy.Default);

    /// <summary>
    /// Returns a copy of these settings with every value set in <paramref name="overrides"/> laid over them: the one
    /// place layers of settings merge (Idem Gateway: defaults, then route metadata, then the route's own section).
    /// </summary>
    /// <param name="overrides">The settings that win where they are set; <see langword="null"/> changes nothing.</param>
    /// <returns>A new instance; neither input changes.</returns>
    public IdempotencyEndpointOptions Overlay(IdempotencyEndpointOptions? overrides) => overrides is null ? Copy() : new IdempotencyEndpointOptions
    {
        Enabled = overrides.Enabled ?? Enabled,
        RequireKey = overrides.RequireKey ?? RequireKey,
        Methods = overrides.Methods ?? Methods,
        ConflictBehavior = overrides.ConflictBehavior ?? ConflictBehavior,
        Retention = overrides.Retention ?? Retention,
        Lease = overrides.Lease ?? Lease,
        WaitTimeout = overrides.WaitTimeout ?? WaitTimeout,
        ExecutionTimeout = overrides.ExecutionTimeout ?? ExecutionTimeout,
        // The two forms of one setting: whichever the overriding layer sets replaces both of the lower layer's.
        ShouldStore = overrides.ShouldStore ?? (overrides.StoredStatuses is null ? ShouldStore : null),
        StoredStatuses = overrides.StoredStatuses ?? (overrides.ShouldStore is null ? StoredStatuses : null),
        MaxStoredBodyBytes = overrides.MaxStoredBodyBytes ?? MaxStoredBodyBytes,
        StoreFailureMode = overrides.StoreFailureMode ?? StoreFailureMode,
        ImplicitKeyWindow = overrides.ImplicitKeyWindow ?? ImplicitKeyWindow,
        JoinedTransaction = overrides.JoinedTransaction ?? JoinedTransaction,
    };

    private IdempotencyEndpointOptions Copy() => (IdempotencyEndpointOptions)MemberwiseClone();

    internal void Validate(IdempotencyPolicy defaults)
    {
        ToPolicy(defaults);
        if (Methods is null)
        {
            return;
        }

        if (Methods.Count == 0)
        {
#pragma warning disable CA2208 // The setting's name is what tells the user which value to fix.
            throw new ArgumentException("Methods is empty, so nothing would be protected; leave it unset for POST and PATCH, or list the methods.", nameof(Methods));
        }

#pragma warning restore CA2208
        ThrowIfNotMethodNames(Methods, nameof(Methods));
    }

    internal static void ThrowIfNotMethodNames(IEnumerable<string> methods, string settingName)
    {
        foreach (var method in methods)
        {
            if (string.IsNullOrEmpty(method) || method.AsSpan().ContainsAnyExcept(HttpTokenCharacters))
            {
                throw new ArgumentException($"{settingName} contains '{method}', which is not an HTTP method name.", settingName);
            }
        }
    }

    /// <summary>Lays these settings over <paramref name="defaults"/> and validates the result; throws on a value out of range.</summary>
    internal IdempotencyPolicy ToPolicy(IdempotencyPolicy defaults)
    {
        if (ShouldStore is not null && StoredStatuses is not null)
        {
#pragma warning disable CA2208 // The setting's name is what tells the user which value to fix.
            throw new ArgumentException("Set ShouldStore or StoredStatuses, not both.", nameof(StoredStatuses));
#pragma warning restore CA2208
        }

        var policy = defaults with
        {
            ConflictBehavior = ConflictBehavior ?? defaults.ConflictBehavior,
            Retention = Retention ?? defaults.Retention,
            Lease = Lease ?? defaults.Lease,
            WaitTimeout = WaitTimeout ?? defaults.WaitTimeout,
            ExecutionTimeout = ExecutionTimeout ?? defaults.ExecutionTimeout,
            ShouldStore = ShouldStore ?? (StoredStatuses is null ? defaults.ShouldStore : ParseStatuses(StoredStatuses)),
            MaxStoredBodyBytes = MaxStoredBodyBytes ?? defaults.MaxStoredBodyBytes,
            StoreFailureMode = StoreFailureMode ?? defaults.StoreFailureMode,
            JoinedTransaction = JoinedTransaction ?? defaults.JoinedTransaction,
        };
        policy.Validate();
        if (ImplicitKeyWindow is { } window && window <= TimeSpan.Zero)
        {
#pragma warning disable CA2208 // The setting's name is what tells the user which value to fix.
            throw new ArgumentOutOfRangeException(nameof(ImplicitKeyWindow), window, "The implicit key window must be positive.");
#pragma warning restore CA2208
        }

        return policy;
    }

    private static Func<int, bool> ParseStatuses(string spec)
    {
        var stored = new bool[600];
        foreach (var token in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int from, to;
            if (token.Length == 3 && token.EndsWith("xx", StringComparison.OrdinalIgnoreCase) && token[0] is >= '1' and <= '5')
            {
                from = (token[0] - '0') * 100;
                to = from + 99;
            }
            else if (token.Split('-') is [var a, var b] && TryStatus(a, out from) && TryStatus(b, out to) && from <= to)
            {
            }
            else if (TryStatus(token, out from))
            {
                to = from;
            }
            else
            {
#pragma warning disable CA2208 // The setting's name is what tells the user which value to fix.
                throw new ArgumentException($"StoredStatuses: '{token}' is not a status (200), a class (2xx) or a range (200-299).", nameof(StoredStatuses));
#pragma warning restore CA2208
            }

            for (var s = from; s <= to; s++)
            {
                stored[s] = true;
            }
        }

        return status => status is >= 0 and < 600 && stored[status];
    }

    private static bool TryStatus(string text, out int status) =>
        int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out status) && status is >= 100 and <= 599;
}
