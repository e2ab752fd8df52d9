using System.Net;
using Idem.Redis;
using Idem.TestUtils;
using StackExchange.Redis;
using Xunit;

namespace Idem.Stores.Tests;

/// <summary>
/// A Redis master that acknowledged claims and died before its replica had them: after the failover a second request
/// claims the same keys again (a duplicate execution), unless the store requires replica acknowledgement (<c>WAIT</c>).
/// The replica is frozen (SIGSTOP) and its replication link cut while the claims are made, so it certainly lags: the
/// naive store's loss is shown, not hoped for. Each case runs on its own private cluster (3 masters + 3 replicas), killed by process id.
/// </summary>
public sealed class RedisClusterFailoverTests
{
    private const int Keys = 40;

    [Theory]
    [InlineData(false, true)]  // asynchronous replication, lagging replica: acknowledged claims are lost
    [InlineData(true, true)]   // WAIT, lagging replica: nothing is acknowledged, so nothing is lost
    [InlineData(true, false)]  // WAIT, healthy replica: everything is acknowledged and survives the failover
    public async Task Acknowledged_claims_survive_a_master_failover_only_with_replica_acknowledgement(bool requireReplicas, bool replicaLags)
    {
        await using var cluster = await RedisCluster.StartPrivateAsync();
        var prefix = RedisServer.NewPrefix("failover");
        var options = new RedisIdempotencyStoreOptions
        {
            Configuration = cluster.Configuration,
            KeyPrefix = prefix,
            RequiredReplicaAcknowledgements = requireReplicas ? 1 : 0,
            OperationTimeout = TimeSpan.FromSeconds(5),
            ReplicaAcknowledgementTimeout = replicaLags ? TimeSpan.FromMilliseconds(300) : TimeSpan.FromSeconds(4),
        };

        // Keys that all live on one master, the one to be killed.
        var (masterPort, keys) = await KeysOnOneMasterAsync(cluster, prefix);
        var replicaPort = await RedisCluster.ReplicaPortOfAsync(masterPort);

        var acknowledged = new List<string>();
        var errors = 0;
        await using (var store = new RedisIdempotencyStore(options))
        {
            // Connected to every node first: the freeze must hit replication, not the client's handshake.
            await store.GetAsync("warm-up", CancellationToken.None);
            if (replicaLags)
            {
                await cluster.SetFrozenAsync(replicaPort, frozen: true);
                await RedisCluster.CutReplicationAsync(masterPort);
            }

            var claims = await Task.WhenAll(keys.Select(async key =>
            {
                try
                {
                    var claim = await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromMinutes(5), TimeSpan.FromHours(1)), CancellationToken.None);
                    return (key, claimed: claim.Status == ClaimStatus.Claimed, error: false);
                }
                catch (Exception ex) when (ex is RedisException or TimeoutException)
                {
                    return (key, claimed: false, error: true);
                }
            }));
            acknowledged.AddRange(claims.Where(c => c.claimed).Select(c => c.key));
            errors = claims.Count(c => c.error);

            await cluster.KillAsync(masterPort);
            if (replicaLags)
            {
                await cluster.SetFrozenAsync(replicaPort, frozen: false);
            }
        }

        await cluster.WaitForFailoverAsync(TimeSpan.FromSeconds(60));

        // A second request for each acknowledged key, through a fresh connection to the promoted replica.
        var duplicates = 0;
        await using (var after = new RedisIdempotencyStore(options))
        {
            foreach (var key in acknowledged)
            {
                var claim = await ClaimAfterFailoverAsync(after, key);
                if (claim.Status == ClaimStatus.Claimed)
                {
                    duplicates++;
                }
            }
        }

        if (!requireReplicas)
        {
            Assert.Equal(Keys, acknowledged.Count);
            Assert.True(duplicates > 0, "The lagging replica should have lost acknowledged claims.");
        }
        else if (replicaLags)
        {
            Assert.Empty(acknowledged);
            Assert.Equal(Keys, errors);
            Assert.Equal(0, duplicates);
        }
        else
        {
            // Behaviour, not speed: a claim whose WAIT ran out on this busy box is an error (503), never a duplicate.
            Assert.Equal(Keys, acknowledged.Count + errors);
            Assert.NotEmpty(acknowledged);
            Assert.Equal(0, duplicates);
        }
    }

    // The promoted replica may take a moment to be known to a fresh multiplexer: retry errors, bounded.
    private static async Task<ClaimResult> ClaimAfterFailoverAsync(RedisIdempotencyStore store, string key)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await store.TryClaimAsync(new ClaimRequest(key, "fp", Guid.NewGuid(), TimeSpan.FromMinutes(5), TimeSpan.FromHours(1)), CancellationToken.None);
            }
            catch (Exception ex) when ((ex is RedisException or TimeoutException) && attempt < 50)
            {
                await Task.Delay(200);
            }
        }
    }

    internal static async Task<(int MasterPort, List<string> Keys)> KeysOnOneMasterAsync(RedisCluster cluster, string prefix)
    {
        await using var multiplexer = await ConnectionMultiplexer.ConnectAsync(cluster.Configuration);
        var db = multiplexer.GetDatabase();
        int? master = null;
        var keys = new List<string>();
        for (var i = 0; keys.Count < Keys && i < 10_000; i++)
        {
            var key = "k" + i;
            var endpoint = (IPEndPoint)(await db.IdentifyEndpointAsync(prefix + "{" + key + "}"))!;
            master ??= endpoint.Port;
            if (endpoint.Port == master)
            {
                keys.Add(key);
            }
        }

        return (master!.Value, keys);
    }
}
