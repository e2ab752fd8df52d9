#!/usr/bin/env bash
# The seeded fault harness (tests/Idem.Faults.Tests) for a long run: every fault kind (or IDEM_FAULTS_KINDS), more
# clients, longer schedules, RUNS seeds in a row. Writes benchmarks/faults-results.md with each run's summary
# (requests, 2xx, 503, 409, 422, faults by kind, longest time to a final answer, violations) and keeps the history of
# every failed run under /tmp/idem-faults. Replay one run with IDEM_FAULTS_SEED=N.
# Usage: benchmarks/faults.sh [RUNS] [SECONDS_OF_FAULTS_PER_RUN] [CLIENTS]   (defaults 5, 120, 16)
set -uo pipefail
cd "$(dirname "$0")/.."
. eng/servers.sh
idem_install_missing
runs="${1:-5}" seconds="${2:-120}" clients="${3:-16}"
out=benchmarks/faults-results.md
raw=$(mktemp)
dotnet build tests/Idem.Faults.Tests/Idem.Faults.Tests.csproj -c Release -nologo -v quiet >/dev/null || exit 1
for run in $(seq 1 "$runs"); do
  IDEM_FAULTS_KINDS="${IDEM_FAULTS_KINDS:-all}" IDEM_FAULTS_SECONDS="$seconds" IDEM_FAULTS_CLIENTS="$clients" IDEM_FAULTS_REPORT="$raw" \
    dotnet test tests/Idem.Faults.Tests/Idem.Faults.Tests.csproj -c Release --no-build -nologo -v quiet \
    --filter "FullyQualifiedName~Tiered_gateways" >/dev/null 2>&1
  echo "run $run/$runs done" >&2
done
{
  echo "# Fault harness: long runs"
  echo
  echo "benchmarks/faults.sh $runs $seconds $clients, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, kinds ${IDEM_FAULTS_KINDS:-all}."
  echo "Tiered gateways (2 processes, claims in PostgreSQL, replays through Redis), each store behind a loopback fault proxy."
  echo
  echo '```'
  cat "$raw"
  echo '```'
} >"$out"
rm -f "$raw"
echo "wrote $out"
