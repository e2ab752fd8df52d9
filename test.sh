#!/usr/bin/env bash
# Runs every test against real servers: installs what is missing, starts PostgreSQL and Redis on free loopback
# ports in temporary directories, runs all test projects, stops the servers, and ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")"

. eng/servers.sh

WORK=$(mktemp -d /tmp/idem-test.XXXXXX)
cleanup() {
  idem_stop_postgres
  idem_stop_redis
  rm -rf "$WORK"
}
trap cleanup EXIT

idem_install_missing
idem_start_postgres "$WORK" || { echo "0 passed, 1 failed"; exit 1; }
export IDEM_TEST_POSTGRES="$IDEM_PG_CONNECTION" IDEM_TEST_POSTGRES_DATA="$IDEM_PG_DATA" IDEM_TEST_POSTGRES_OPTIONS="$IDEM_PG_OPTIONS"
idem_start_redis "$WORK"
export IDEM_TEST_REDIS="$IDEM_REDIS_ENDPOINT"

log() { idem_log "$@"; }

log "building"
if ! dotnet build Idem.slnx -c Release -nologo -v quiet >"$WORK/build.log" 2>&1; then
  grep -E "error" "$WORK/build.log" | sort -u | head -50 >&2
  echo "0 passed, 1 failed"
  exit 1
fi

RESULTS="$WORK/results"
mkdir -p "$RESULTS"
status=0
for project in tests/*/*.csproj; do
  grep -q 'Microsoft.NET.Test.Sdk' "$project" || continue
  name=$(basename "$project" .csproj)
  log "testing $name"
  dotnet test "$project" -c Release --no-build -nologo -v quiet \
    --logger "trx;LogFileName=$name.trx" --results-directory "$RESULTS" --blame-hang-timeout 5m \
    >"$WORK/$name.log" 2>&1 || { status=1; grep -E "^\s+Failed |\[FAIL\]|Error Message|Assert\." "$WORK/$name.log" | head -40 >&2; }
done

read -r passed failed skipped < <(python3 - "$RESULTS" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
p = f = s = 0
for path in glob.glob(sys.argv[1] + "/*.trx"):
    c = ET.parse(path).getroot().find("t:ResultSummary/t:Counters", ns)
    p += int(c.get("passed", 0)); f += int(c.get("failed", 0)) + int(c.get("error", 0)) + int(c.get("timeout", 0)) + int(c.get("aborted", 0))
    s += int(c.get("notExecuted", 0))
print(p, f, s)
PY
)
# Alert rules (issue 17): promtool checks deploy/prometheus/idem-alerts.yml and runs each unit test file; each counts as one test.
if command -v promtool >/dev/null 2>&1; then
  log "testing alert rules with promtool"
  if promtool check rules deploy/prometheus/idem-alerts.yml >"$WORK/promtool.log" 2>&1; then passed=$((${passed:-0} + 1)); else failed=$((${failed:-0} + 1)); cat "$WORK/promtool.log" >&2; fi
  for rules_test in deploy/prometheus/tests/*.test.yml; do
    if promtool test rules "$rules_test" >"$WORK/promtool.log" 2>&1; then passed=$((${passed:-0} + 1)); else failed=$((${failed:-0} + 1)); cat "$WORK/promtool.log" >&2; fi
  done
else
  log "promtool is missing: the alert rules were not tested"; failed=$((${failed:-0} + 1))
fi

if [ "$status" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then failed=1; fi
line="${passed:-0} passed, ${failed:-0} failed"
[ "${skipped:-0}" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "${failed:-0}" -eq 0 ]
