namespace Idem;

/// <summary>
/// A unique slug could not be allocated within <see cref="SlugOptions.MaxAttempts"/> statements: every candidate was
/// taken by a concurrent insert. Nothing was inserted; the call can be retried.
/// </summary>
public sealed class SlugAllocationException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SlugAllocationException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public SlugAllocationException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and its cause.</summary>
    public SlugAllocationException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception for a base slug and the number of statements tried.</summary>
    public SlugAllocationException(string baseSlug, int attempts)
        : base($"No free slug for '{baseSlug}' after {attempts} attempts: concurrent inserts took every candidate. Nothing was inserted; retry, or raise SlugOptions.MaxAttempts.")
    {
        BaseSlug = baseSlug;
        Attempts = attempts;
    }

    /// <summary>The slug made from the name, before any suffix.</summary>
    public string? BaseSlug { get; }

    /// <summary>The insert statements tried.</summary>
    public int Attempts { get; }
}
