#!/usr/bin/env bash
# Idem HTTP benchmarks: a bare Kestrel endpoint against the same endpoint under Idem, and the stores against the drivers
# doing the same round trips, in one run, with wrk. Every result is a ratio to a baseline measured in the same run,
# because this box is shared. See benchmarks/README.md. Writes benchmarks/results.md and results.json and prints the first.
#
# The work is done by Idem.Benchmarks.Driver (a .NET program): it starts the servers, pins them and wrk with taskset,
# reads their counters and judges the cases. This wrapper only installs wrk, builds the driver and runs it.
#
# Environment (all optional), read by the driver:
#   DURATION=10s WARMUP=10s THREADS=2 CONNECTIONS=32   wrk settings per case
#   BRACKET=5s                                        bare measured right before and right after each pinned case's
#                                                     timed run, on a bare server kept running (BRACKET=0 turns it off)
#   BRACKET_TOLERANCE=15 ATTEMPTS=3                   a case whose two bare brackets differ by more than 15 % was measured
#                                                     while the box changed speed: it is measured again (fresh server), up
#                                                     to 3 attempts in all; every attempt is listed in results.md
#   JIT_SETTLE=50 WARMUP_MAX=60s                      after WARMUP, keep warming up in 5 s slices while the server compiled
#                                                     more than 50 methods in the last one, up to 60 s in all (0 = off)
#   TIERING=fast|default                              fast (default) sets DOTNET_TC_CallCountingDelayMs=0, see README
#   PIN=1 SERVER_CPUS=0 WRK_CPUS=1                    taskset pinning (PIN=0 turns it off)
#   CASES="bare memory-new ..."                       run only these cases (bare is always measured, interleaved)
#   TP_SPIN=default|0                                 0 sets DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0 for every case
#   IDEM_BENCH_POSTGRES="Host=...;Database=..."       PostgreSQL to use; when unset, a temporary local one is started
#                                                     (PostgreSQL 15 binaries, as test.sh does); IDEM_BENCH_POSTGRES=off skips it
#   IDEM_BENCH_REDIS=host:port                        Redis to use (redis and tiered cases); when unset, a temporary local
#                                                     one is started; IDEM_BENCH_REDIS=off skips those cases
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../eng/servers.sh"
IDEM_NEED_WRK=1 idem_install_missing
command -v taskset >/dev/null || [ "${PIN:-1}" = 0 ] || { echo "taskset not found (util-linux); PIN=0 runs unpinned" >&2; exit 1; }
dotnet build "$here/Idem.Benchmarks.Driver/Idem.Benchmarks.Driver.csproj" -c Release -nologo -v quiet >/dev/null
exec dotnet "$here/Idem.Benchmarks.Driver/bin/Release/net10.0/Idem.Benchmarks.Driver.dll" run
