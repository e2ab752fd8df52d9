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
  idem_stop_redis_cluster
  rm -rf "$WORK"
}
trap cleanup EXIT

idem_install_missing
idem_start_postgres "$WORK" || { echo "0 passed, 1 failed"; exit 1; }
export IDEM_TEST_POSTGRES="$IDEM_PG_CONNECTION" IDEM_TEST_POSTGRES_DATA="$IDEM_PG_DATA" IDEM_TEST_POSTGRES_OPTIONS="$IDEM_PG_OPTIONS"
idem_start_redis "$WORK"
export IDEM_TEST_REDIS="$IDEM_REDIS_ENDPOINT"
# A Redis Cluster (3 masters + 3 replicas) for the cluster conformance suite and gateway storms; failover tests start
# their own, since they kill a master.
idem_start_redis_cluster "$WORK" && export IDEM_TEST_REDIS_CLUSTER="$IDEM_REDIS_CLUSTER"

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

# The protocol's spin model (docs/model): each property that holds and each mutant rejected counts as one test.
log "checking the protocol model"
model_passed=0 model_failed=0
if docs/model/check.sh >"$WORK/model.log" 2>&1; then :; else grep -E "^FAIL" "$WORK/model.log" >&2; fi
read -r model_passed model_failed < <(sed -n 's/^model: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$WORK/model.log")
[ -z "${model_passed:-}" ] && { model_passed=0; model_failed=1; tail -5 "$WORK/model.log" >&2; }

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
# clients/js (issue 16): node's own test runner against a faulty server and the demo built above; its TAP summary
# joins the totals.
log "testing clients/js"
node --test --test-reporter=tap clients/js/tests/ >"$WORK/clients-js.tap" 2>&1 \
  || { status=1; grep -E "^\s*not ok|error:|expected|actual" "$WORK/clients-js.tap" | head -40 >&2; }
read -r js_passed js_failed js_skipped < <(awk '/^# pass /{p=$3} /^# fail /{f=$3} /^# skipped /{s=$3} END{print p+0, f+0, s+0}' "$WORK/clients-js.tap")
passed=$(( ${passed:-0} + js_passed )); failed=$(( ${failed:-0} + js_failed )); skipped=$(( ${skipped:-0} + js_skipped ))

passed=$(( ${passed:-0} + model_passed )) failed=$(( ${failed:-0} + model_failed ))
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
