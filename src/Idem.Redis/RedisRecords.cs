using System.Globalization;
using StackExchange.Redis;

namespace Idem.Redis;

/// <summary>
/// How a record is kept in Redis: one hash per key, shared by the store and the response cache. Fields:
/// <c>s</c> state (1 in flight, 2 completed), <c>f</c> fingerprint, <c>o</c> owner token (32 hex digits),
/// <c>l</c> lease end and <c>e</c> retention end (Unix ms by Redis's clock), <c>c</c> status code,
/// <c>h</c> headers (<see cref="ResponseCodec"/>), <c>b</c> body bytes, <c>m</c> 1 when the body was omitted,
/// <c>w</c> set while someone waits for the in-flight record to change (only then do changes publish),
/// <c>p</c> the claimer's principal hash and <c>r</c> the operation (<see cref="IdempotencyRecordMetadata"/>; absent on
/// records written before, and on claims without metadata).
/// </summary>
internal static class RedisRecords
{
    /// <summary>The fields a record is read from, in the order <see cref="Read(string, ReadOnlySpan{RedisValue})"/> expects.</summary>
    public static readonly RedisValue[] Fields = ["s", "f", "o", "l", "e", "c", "h", "b", "m"];

    /// <summary><see cref="Fields"/> and the metadata fields, for listings.</summary>
    public static readonly RedisValue[] FieldsWithMetadata = [.. Fields, "p", "r"];

    /// <summary>The Redis key of <paramref name="storeKey"/>; the braces make it a Cluster hash tag.</summary>
    public static RedisKey KeyFor(string prefix, string storeKey) => prefix + "{" + storeKey + "}";

    public static string Owner(Guid owner) => owner.ToString("N");

    public static long Milliseconds(TimeSpan span) => (long)Math.Ceiling(span.TotalMilliseconds);

    public static IdempotencyRecord? Read(string storeKey, ReadOnlySpan<RedisValue> values)
    {
        if (values[0].IsNull)
        {
            return null;
        }

        var completed = (string?)values[0] == "2";
        StoredResponse? response = null;
        if (completed)
        {
            byte[] headers = values[6]!;
            byte[] body = values[7]!;
            response = new StoredResponse(
                int.Parse((string)values[5]!, NumberStyles.Integer, CultureInfo.InvariantCulture),
                headers is { Length: > 0 } ? StoredResponseHeaders.Decode(headers) : [],
                body ?? [])
            {
                BodyOmitted = (string?)values[8] == "1",
            };
        }

        return new IdempotencyRecord
        {
            Key = storeKey,
            State = completed ? IdempotencyRecordState.Completed : IdempotencyRecordState.InFlight,
            Fingerprint = (string)values[1]!,
            OwnerToken = Guid.ParseExact((string)values[2]!, "N"),
            LeaseExpiresAt = DateTimeOffset.FromUnixTimeMilliseconds((long)values[3]),
            ExpiresAt = DateTimeOffset.FromUnixTimeMilliseconds((long)values[4]),
            Response = response,
            Metadata = values.Length > 10 && (!values[9].IsNull || !values[10].IsNull)
                ? new IdempotencyRecordMetadata { PrincipalHash = values[9].IsNull ? null : (string?)values[9], Operation = values[10].IsNull ? null : (string?)values[10] }
                : null,
        };
    }

    public static IdempotencyRecord? Read(string storeKey, RedisResult[] values)
    {
        var converted = new RedisValue[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            converted[i] = (RedisValue)values[i];
        }

        return Read(storeKey, converted);
    }
}
