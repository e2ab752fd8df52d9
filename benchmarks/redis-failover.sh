#!/usr/bin/env bash
# Redis Cluster failover, measured: acknowledged claims lost when a master is SIGKILLed mid-storm, with and without
# RequiredReplicaAcknowledgements (WAIT), and WAIT's latency cost. Each run starts its own 3+3 cluster on loopback
# (stopped by PID). Usage: benchmarks/redis-failover.sh [RUNS]   (default 10; about 30 s per run)
# Writes benchmarks/redis-failover-results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. eng/servers.sh
idem_install_missing
dotnet build benchmarks/Idem.Redis.Failover/Idem.Redis.Failover.csproj -c Release -nologo -v quiet >/dev/null
dotnet benchmarks/Idem.Redis.Failover/bin/Release/net10.0/Idem.Redis.Failover.dll "${1:-10}" benchmarks/redis-failover-results.md
