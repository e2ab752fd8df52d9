#!/usr/bin/env bash
# Runs every test against real servers: installs what is missing, starts PostgreSQL and Redis on free loopback
# ports in temporary directories, runs all test projects, stops the servers, and ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")"

PG_BIN=/usr/lib/postgresql/15/bin
log() { printf '[test.sh] %s\n' "$*" >&2; }

install_missing() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  [ -x "$PG_BIN/initdb" ] || need+=(postgresql)
  command -v node >/dev/null 2>&1 || need+=(nodejs)   # the gateway tests run a third-party Express upstream
  command -v npm >/dev/null 2>&1 || need+=(npm)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

WORK=$(mktemp -d /tmp/idem-test.XXXXXX)
PG_STARTED=""
REDIS_PID=""
cleanup() {
  if [ -n "$PG_STARTED" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  mkdir -p "$WORK/pg" "$WORK/pgsock"
  [ "$(id -u)" -eq 0 ] && chown postgres "$WORK" "$WORK/pg" "$WORK/pgsock"
  chmod 755 "$WORK"
  as_postgres "$PG_BIN/initdb" -D "$WORK/pg" -U postgres -A trust --no-sync >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; return 1; }
  local port; port=$(free_port)
  as_postgres "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $WORK/pgsock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null || { cat "$WORK/pg.log" >&2; return 1; }
  PG_STARTED=1
  export IDEM_TEST_POSTGRES="Host=127.0.0.1;Port=$port;Username=postgres;Database=postgres;Pooling=true;Maximum Pool Size=100"
  export IDEM_TEST_POSTGRES_DATA="$WORK/pg"
  export IDEM_TEST_POSTGRES_OPTIONS="-p $port -c listen_addresses=127.0.0.1 -k $WORK/pgsock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
  log "PostgreSQL on 127.0.0.1:$port"
}

start_redis() {
  local port; port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" --daemonize no >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  export IDEM_TEST_REDIS="127.0.0.1:$port"
  log "Redis on 127.0.0.1:$port"
}

install_missing
start_postgres || { echo "0 passed, 1 failed"; exit 1; }
start_redis

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
if [ "$status" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then failed=1; fi
line="${passed:-0} passed, ${failed:-0} failed"
[ "${skipped:-0}" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "${failed:-0}" -eq 0 ]
