using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using StackExchange.Redis;

namespace Idem.Redis;

/// <summary>The administration shared by the Redis store and the Redis response cache: both keep records as <see cref="RedisRecords"/> hashes.</summary>
internal static class RedisAdmin
{
    public static async IAsyncEnumerable<IdempotencyRecord> ListAsync(
        RedisConnection connection, string prefix, IdempotencyRecordQuery query, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        query.Validate();
        if (query.Expired == true)
        {
            // Redis deletes a record when its retention (the key's TTL) ends: nothing expired is ever left.
            yield break;
        }

        var multiplexer = await connection.GetMultiplexerAsync(cancellationToken).ConfigureAwait(false);
        var database = multiplexer.GetDatabase();
        var pattern = Escape(prefix) + "{" + Escape(query.KeyPrefix ?? string.Empty) + "*}";
        var returned = 0;
        foreach (var server in multiplexer.GetServers())
        {
            if (server.IsReplica || !server.IsConnected)
            {
                continue;
            }

            await foreach (var redisKey in server.KeysAsync(database.Database, pattern, pageSize: 250).WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                var name = (string)redisKey!;
                var storeKey = name.Substring(prefix.Length + 1, name.Length - prefix.Length - 2);
                var values = await database.HashGetAsync(redisKey, RedisRecords.FieldsWithMetadata).WaitAsync(connection.Timeout, cancellationToken).ConfigureAwait(false);
                if (RedisRecords.Read(storeKey, values) is not { } record
                    || (query.State is { } state && record.State != state)
                    || (query.ExpiresBefore is { } before && record.ExpiresAt >= before)
                    || (query.ExpiresAfter is { } after && record.ExpiresAt <= after)
                    || !query.MatchesMetadata(record.Metadata))
                {
                    continue;
                }

                yield return record;
                if (++returned >= query.Limit)
                {
                    yield break;
                }
            }
        }
    }

    public static async ValueTask<bool> DeleteAsync(RedisConnection connection, RedisKey key, CancellationToken cancellationToken) =>
        await connection.RunAsync(static (db, k) => db.KeyDeleteAsync(k), key, cancellationToken).ConfigureAwait(false);

    /// <summary>The server's clock, and the settings that decide whether records survive: eviction and persistence.</summary>
    public static async ValueTask<IdempotencyStoreDescription> DescribeAsync(RedisConnection connection, string kind, string prefix, CancellationToken cancellationToken)
    {
        var multiplexer = await connection.GetMultiplexerAsync(cancellationToken).ConfigureAwait(false);
        var server = multiplexer.GetServers().FirstOrDefault(s => s.IsConnected && !s.IsReplica)
            ?? throw new InvalidOperationException("No connected Redis primary.");
        var time = await server.TimeAsync().WaitAsync(connection.Timeout, cancellationToken).ConfigureAwait(false);
        var settings = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["key_prefix"] = prefix,
            ["redis_version"] = server.Version.ToString(),
        };
        try
        {
            foreach (var name in new[] { "maxmemory-policy", "maxmemory", "appendonly", "save" })
            {
                foreach (var pair in await server.ConfigGetAsync(name).WaitAsync(connection.Timeout, cancellationToken).ConfigureAwait(false))
                {
                    settings[pair.Key] = pair.Value;
                }
            }
        }
        catch (Exception ex) when (ex is RedisServerException or RedisCommandException)
        {
            // CONFIG is disabled on many managed services, and needs allowAdmin on the client: the settings stay unknown (absent) then.
        }

        try
        {
            var info = await server.InfoAsync("persistence").WaitAsync(connection.Timeout, cancellationToken).ConfigureAwait(false);
            foreach (var pair in info.SelectMany(g => g))
            {
                if (pair.Key is "aof_enabled" or "rdb_last_bgsave_status" or "aof_last_write_status" or "rdb_changes_since_last_save")
                {
                    settings[pair.Key] = pair.Value;
                }
            }
        }
        catch (Exception ex) when (ex is RedisServerException or RedisCommandException)
        {
            // INFO may be renamed or disabled too.
        }

        return new IdempotencyStoreDescription
        {
            Kind = kind,
            StoreTime = new DateTimeOffset(DateTime.SpecifyKind(time, DateTimeKind.Utc)),
            Settings = settings,
        };
    }

    public static IdempotencySchemaMigration NoSchema { get; } = new(null, null, []);

    // SCAN's MATCH is a glob: the prefix's own *, ?, [, ] and \ must match literally.
    private static string Escape(string text)
    {
        var builder = new StringBuilder(text.Length);
        foreach (var c in text)
        {
            if (c is '*' or '?' or '[' or ']' or '\\')
            {
                builder.Append('\\');
            }

            builder.Append(c);
        }

        return builder.ToString();
    }

}
