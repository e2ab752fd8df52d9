#!/usr/bin/env bash
# The crash soaks of issue 20, longer than CI runs them: the crash host SIGKILLed at every point
# (tests/Idem.JoinedTransaction.CrashTests, IDEM_CRASH_REPETITIONS per point and database, CI: 50) and the demo
# SIGKILLed at random moments while clients create slow communities (tests/Idem.Demo.DataLayer.Tests DemoKillTests,
# IDEM_DEMO_KILLS per variant and database, CI: 6; IDEM_DEMO_KILL_SEED replays a run's kill moments). Starts a
# throwaway PostgreSQL; both tests also run on SQLite files.
#
#   benchmarks/crash-soak.sh                  200 kills per crash point, 60 demo kills
#   IDEM_CRASH_REPETITIONS=500 IDEM_DEMO_KILLS=200 benchmarks/crash-soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. eng/servers.sh
WORK=$(mktemp -d /tmp/idem-crash-soak.XXXXXX)
trap 'idem_stop_postgres; rm -rf "$WORK"' EXIT
idem_install_missing
idem_start_postgres "$WORK"
export IDEM_TEST_POSTGRES="$IDEM_PG_CONNECTION" IDEM_TEST_POSTGRES_DATA="$IDEM_PG_DATA" IDEM_TEST_POSTGRES_OPTIONS="$IDEM_PG_OPTIONS"
export IDEM_CRASH_REPETITIONS="${IDEM_CRASH_REPETITIONS:-200}" IDEM_DEMO_KILLS="${IDEM_DEMO_KILLS:-60}"
dotnet test tests/Idem.JoinedTransaction.CrashTests/Idem.JoinedTransaction.CrashTests.csproj -c Release -nologo \
  --logger "console;verbosity=detailed"
dotnet test tests/Idem.Demo.DataLayer.Tests/Idem.Demo.DataLayer.Tests.csproj -c Release -nologo \
  --filter "FullyQualifiedName~DemoKillTests" --logger "console;verbosity=detailed"
