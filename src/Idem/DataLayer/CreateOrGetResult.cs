namespace Idem;

/// <summary>The one row a create-or-get call returned, and whether this call created it.</summary>
/// <typeparam name="T">The row, as read by the caller (an entity, a record, an id).</typeparam>
/// <param name="Value">The row that holds the natural key now: the one this call inserted, or the one that was there.</param>
/// <param name="Created"><see langword="true"/> when this call inserted the row; <see langword="false"/> when it found it.</param>
public readonly record struct CreateOrGetResult<T>(T Value, bool Created);
