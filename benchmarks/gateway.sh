#!/usr/bin/env bash
# Idem Gateway vs plain YARP on the same upstream, in one run, with wrk. Writes benchmarks/gateway-results.md and .json.
#
#   benchmarks/gateway.sh [seconds per case and round, default 8] [connections, default 32] [rounds, default 3]
#
# Cases (POST /orders with a small JSON body; every process on this machine, loopback only):
#   plain YARP            the baseline: YARP forwarding to the upstream, no Idem
#   protection off        Idem Gateway with every route unprotected: what the gateway's plumbing costs by itself
#   Idem in-memory, new   a new Idempotency-Key per request: claim, forward, capture, complete
#   Idem SQLite, new      the same on the embedded SQLite store
#   Idem replay           one key for every request: replayed from the store, the upstream is not called
# Ratios are against plain YARP. Targets (issue 21): in-memory >= 0.85x, SQLite >= 0.55x, replay >= 1x.
#
# The work is done by Idem.Benchmarks.Driver (a .NET program); this wrapper only installs wrk, builds it and runs it.
# WARMUP (seconds, default 6) is read from the environment; then each proxy keeps warming up in 5 s slices until its
# tiered-compilation thread used at most JIT_SETTLE_MS (default 100; 0 = off) ms of CPU in a slice, at most WARMUP_MAX
# (default 60) seconds more: on a loaded box Idem Gateway, with more code to promote, was otherwise measured mid-JIT.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../eng/servers.sh"
IDEM_NEED_WRK=1 idem_install_missing
dotnet build "$here/Idem.Benchmarks.Driver/Idem.Benchmarks.Driver.csproj" -c Release -nologo -v quiet >/dev/null
exec dotnet "$here/Idem.Benchmarks.Driver/bin/Release/net10.0/Idem.Benchmarks.Driver.dll" gateway "$@"
