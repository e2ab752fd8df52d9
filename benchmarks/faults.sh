#!/usr/bin/env bash
# The seeded fault harness (tests/Idem.Faults.Tests) for long runs, and the broken builds under every fault kind.
#
#   benchmarks/faults.sh [RUNS] [SECONDS_OF_FAULTS_PER_RUN] [CLIENTS]   (defaults 5, 120, 16)
#     RUNS seeds in a row, each running the two shipped schedules: every store fault against an upstream that counts
#     every completed forward, and every fault kind (gateway SIGKILLs too) against an upstream that honours the
#     forwarded Idempotency-Key (itself protected by Idem). Writes benchmarks/faults-results.md: each run's summary and
#     the totals (requests, 2xx, 503, 409, 422, faults by kind, duplicates, longest time to a final answer).
#     IDEM_FAULTS_UPSTREAM_DELAY_MS (default 200) shortens the upstream's work for more requests per second.
#   benchmarks/faults.sh --broken-builds
#     one deliberately broken configuration per fault kind, each of which the checker must catch; writes
#     benchmarks/faults-broken-builds.md.
#
# Every failed run keeps its history (and the gateways' error logs) under /tmp/idem-faults; replay one with
# IDEM_FAULTS_SEED=N (and IDEM_FAULTS_KINDS=Kind,Kind, IDEM_FAULTS_LEASE_SECONDS=N as printed).
set -uo pipefail
cd "$(dirname "$0")/.."
. eng/servers.sh
idem_install_missing
project=tests/Idem.Faults.Tests/Idem.Faults.Tests.csproj
raw=$(mktemp)
dotnet build "$project" -c Release -nologo -v quiet >/dev/null || exit 1
started=$(date +%s)

if [ "${1:-}" = "--broken-builds" ]; then
  out=benchmarks/faults-broken-builds.md
  IDEM_FAULTS_BROKEN=all IDEM_FAULTS_REPORT="$raw" \
    dotnet test "$project" -c Release --no-build -nologo -v quiet --filter "FullyQualifiedName~A_broken_configuration" >/dev/null 2>&1
  {
    echo "# Fault harness: a broken build under each fault kind"
    echo
    echo "benchmarks/faults.sh --broken-builds, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, $(( $(date +%s) - started )) s."
    echo "Each line: a deliberately broken configuration, the one fault kind the nemesis injects, and whether the checker"
    echo "caught it (it must: CAUGHT on every line)."
    echo
    echo '```'
    cat "$raw"
    echo '```'
  } >"$out"
  rm -f "$raw"
  echo "wrote $out: $(grep -c '^broken .*: CAUGHT' "$out" || true) caught, $(grep -c '^broken .*: MISSED' "$out" || true) missed"
  exit 0
fi

runs="${1:-5}" seconds="${2:-120}" clients="${3:-16}"
out=benchmarks/faults-results.md
failed=0 logs=()
mkdir -p /tmp/idem-faults
for run in $(seq 1 "$runs"); do
  # Each run's test output is kept: a schedule that throws (rather than reporting violations) leaves no summary line.
  log=/tmp/idem-faults/faults-sh-$(date -u +%Y%m%dT%H%M%S)-run$run.log
  if IDEM_FAULTS_ALL=1 IDEM_FAULTS_SECONDS="$seconds" IDEM_FAULTS_CLIENTS="$clients" IDEM_FAULTS_REPORT="$raw" \
    dotnet test "$project" -c Release --no-build -nologo --logger "console;verbosity=normal" \
      --filter "FullyQualifiedName~Tiered_gateways" >"$log" 2>&1; then
    rm -f "$log"
  else
    failed=$((failed + 1)) logs+=("$log")
  fi
  echo "run $run/$runs done ($(grep -c ' requests, ' "$raw") schedules so far)${logs:+; output of failed runs: ${logs[*]}}" >&2
done
{
  echo "# Fault harness: long runs"
  echo
  echo "benchmarks/faults.sh $runs $seconds $clients, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, $(( $(date +%s) - started )) s,"
  echo "upstream delay ${IDEM_FAULTS_UPSTREAM_DELAY_MS:-200} ms, $failed of $runs runs with a failed schedule${logs:+ (test output: ${logs[*]})}."
  echo "Tiered gateways (2 processes, claims in PostgreSQL, replays through Redis, the product's 10 s lease), each store"
  echo "behind a loopback fault proxy; the nemesis holds each fault 0.3 to 2.5 s."
  echo
  python3 - "$raw" <<'PY'
import re, sys, collections
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
tot = collections.Counter(); faults = collections.Counter(); longest = 0.0; schedules = collections.Counter()
for line in lines:
    m = re.search(r"(\d+) requests, (\d+) 2xx, (\d+) 503, (\d+) 409, (\d+) 422, (\d+) connection errors, (\d+) duplicates; faults (.*?); longest time to a final answer ([\d.]+) s; completions retried and stored (\d+), abandoned (\d+).*?; (\d+) violations", line)
    if not m:
        continue
    schedules[line.split(":")[0]] += 1
    for name, value in zip(["requests", "2xx", "503", "409", "422", "connection errors", "duplicates"], m.groups()[:7]):
        tot[name] += int(value)
    tot["completions retried and stored"] += int(m.group(10)); tot["completions abandoned"] += int(m.group(11)); tot["violations"] += int(m.group(12))
    for kind, count in re.findall(r"(\w+)×(\d+)", m.group(8)):
        faults[kind] += int(count)
    longest = max(longest, float(m.group(9)))
    k = re.search(r"Idem (\d+)$", line.split("; ")[-2]) if "honours" in line else None
    if k:
        tot["keys forwarded again, answered by the upstream's Idem"] += int(k.group(1))
print("| | total |\n|---|---|")
print(f"| schedules | {sum(schedules.values())} ({', '.join(f'{v}× {k}' for k, v in schedules.items())}) |")
for name in ["requests", "2xx", "503", "409", "422", "connection errors", "duplicates", "violations", "completions retried and stored", "completions abandoned", "keys forwarded again, answered by the upstream's Idem"]:
    print(f"| {name} | {tot[name]:,} |")
print(f"| faults injected | {sum(faults.values())}: {', '.join(f'{k} {v}' for k, v in sorted(faults.items()))} |")
print(f"| longest time to a final answer (unavailability seen by one client for one key) | {longest:.1f} s |")
PY
  echo
  echo "Each schedule's summary:"
  echo
  echo '```'
  cat "$raw"
  echo '```'
} >"$out"
rm -f "$raw"
echo "wrote $out"
