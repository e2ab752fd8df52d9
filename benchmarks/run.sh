#!/usr/bin/env bash
# Idem HTTP benchmarks: a bare Kestrel endpoint against the same endpoint under Idem, in one run, with wrk.
# Every result is a ratio to the bare baseline measured in the same run (interleaved), because this box is shared.
# See benchmarks/README.md. Writes benchmarks/results.md and prints it.
#
# Environment (all optional):
#   DURATION=10s WARMUP=10s THREADS=2 CONNECTIONS=32   wrk settings per case
#   BRACKET=5s                                        bare measured right before and right after each pinned case's
#                                                     timed run, on a bare server kept running (BRACKET=0 turns it off)
#   BRACKET_TOLERANCE=15 ATTEMPTS=3                   a case whose two bare brackets differ by more than 15 % was measured
#                                                     while the box changed speed: it is measured again (fresh server), up
#                                                     to 3 attempts in all; every attempt is listed in results.md
#   TIERING=fast|default                              fast (default) sets DOTNET_TC_CallCountingDelayMs=0, see README
#   PIN=1 SERVER_CPUS=0 WRK_CPUS=1                    taskset pinning (PIN=0 turns it off)
#   CASES="bare memory-new ..."                       run only these cases (bare is always measured, interleaved)
#   TP_SPIN=default|0                                 0 sets DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0 for every case
#                                                     (no thread-pool spinning before a worker sleeps), see README
#   IDEM_BENCH_POSTGRES="Host=...;Database=..."       PostgreSQL to use; when unset, a temporary local one is started
#                                                     (PostgreSQL 15 binaries, as test.sh does); IDEM_BENCH_POSTGRES=off skips it
#   IDEM_BENCH_REDIS=host:port                        Redis to use (redis and tiered cases); when unset, a temporary local
#                                                     one is started; IDEM_BENCH_REDIS=off skips those cases
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

DURATION="${DURATION:-10s}"
BRACKET="${BRACKET:-5s}"
BRACKET_TOLERANCE="${BRACKET_TOLERANCE:-15}"
ATTEMPTS="${ATTEMPTS:-3}"
WARMUP="${WARMUP:-10s}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
PIN="${PIN:-1}"
SERVER_CPUS="${SERVER_CPUS:-0}"
WRK_CPUS="${WRK_CPUS:-1}"
CASES="${CASES:-}"
TIERING="${TIERING:-fast}"
TP_SPIN="${TP_SPIN:-default}"
POSTGRES="${IDEM_BENCH_POSTGRES:-}"
REDIS="${IDEM_BENCH_REDIS:-}"

project="$here/Idem.Benchmarks.Server/Idem.Benchmarks.Server.csproj"
out_dir="$here/Idem.Benchmarks.Server/bin/Release/net10.0"
dll="$out_dir/Idem.Benchmarks.Server.dll"
results="$here/results.md"
run_id="$(date +%s)-$$"
work="$(mktemp -d "${TMPDIR:-/tmp}/idem-bench.XXXXXX")"
rows="$work/rows.tsv"
: >"$rows"
remeasured="$work/remeasured.txt"
: >"$remeasured"
server_pid=""
bracket_pid=""
bracket_url=""

. "$here/../eng/servers.sh"
cleanup() {
  for pid in "$server_pid" "$bracket_pid"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      kill -CONT "$pid" 2>/dev/null || true # a server frozen for a bracket would never act on the TERM
      wait "$pid" 2>/dev/null || true
    fi
  done
  idem_stop_postgres || true
  idem_stop_redis || true
  rm -rf "$work"
}
trap cleanup EXIT

IDEM_NEED_WRK=1 idem_install_missing
local_postgres=0
if [[ -z "$POSTGRES" ]]; then
  local_postgres=1 # started just before its cases, below
elif [[ "$POSTGRES" == "off" ]]; then
  POSTGRES=""
fi
local_redis=0
if [[ -z "$REDIS" ]]; then
  local_redis=1
elif [[ "$REDIS" == "off" ]]; then
  REDIS=""
fi

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl not found" >&2; exit 1; }

server_env=(DOTNET_gcServer=1)
tiering_note="tiered compilation and dynamic PGO at .NET defaults"
if [[ "$TIERING" == fast ]]; then
  # Tiered compilation and dynamic PGO stay on; only the call-counting delay goes. Under a saturating load on one
  # pinned core that delay never runs out, and neither bare nor Idem code reached Tier 1 in a 10 s run (README).
  server_env+=(DOTNET_TC_CallCountingDelayMs=0)
  tiering_note="tiered compilation and dynamic PGO on, DOTNET_TC_CallCountingDelayMs=0"
fi

spin_note=""
if [[ "$TP_SPIN" == 0 ]]; then
  # Idle thread-pool workers spin (sched_yield) before they sleep. With PostgreSQL and wrk on the same two cores that
  # spinning takes CPU from the processes doing the work (README, "Thread-pool spinning").
  server_env+=(DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0)
  spin_note=", thread-pool spin limit 0"
fi

server_prefix=()
wrk_prefix=()
pin_note="not pinned"
if [[ "$PIN" == "1" ]] && command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
  server_prefix=(taskset -c "$SERVER_CPUS")
  wrk_prefix=(taskset -c "$WRK_CPUS")
  pin_note="server on CPU $SERVER_CPUS, wrk on CPU $WRK_CPUS (taskset; PostgreSQL cases unpinned)"
fi

# ---- build once ---------------------------------------------------------------------------------------------
build_args=(-c Release --nologo -v quiet)
echo "== building (Release) =="
dotnet build "$project" "${build_args[@]}" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }

# ---- helpers --------------------------------------------------------------------------------------------------
free_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 30000))
    if ! ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
      echo "$port"
      return
    fi
  done
  echo "no free port found" >&2
  exit 1
}

stats() { # port -> the server's /stats JSON
  curl -sf "http://127.0.0.1:$1/stats"
}

json_field() { # json key -> number
  sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" <<<"$1"
}

field() { # BENCH-line key -> value
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"
}

wanted() { # case name -> 0 when it should run
  [[ -z "$CASES" ]] && return 0
  [[ " $CASES " == *" $1 "* ]]
}

skip() { # name note
  printf '%s\tskip\t\t\t\t\t\t%s\n' "$1" "$2" >>"$rows"
  echo "   skipped: $2"
}

# run_case <name> <store> <new|replay> [connection]
run_case() {
  local name="$1" store="$2" mode="$3" connection="${4:-}" attempt="${5:-1}"
  wanted "$name" || [[ "$name" == bare* ]] || return 0
  echo "== $name (store=$store, $mode key)$([[ $attempt -gt 1 ]] && echo ", attempt $attempt") =="

  # PostgreSQL cases are never pinned: the server, wrk and PostgreSQL's backends (a third CPU-hungry process) share
  # both cores through the scheduler. Pinning the server to one core would leave PostgreSQL fighting wrk for the other
  # and measure that split, not the store (README, "Pinning").
  local srv_pre=("${server_prefix[@]}") wrk_pre=("${wrk_prefix[@]}") unpinned=0
  if [[ "$store" == postgres || "$store" == redis || "$store" == tiered ]]; then
    unpinned=1
    srv_pre=()
    wrk_pre=()
  fi

  local port log
  port="$(free_port)"
  log="$work/$name.log"
  local args=(--store "$store" --port "$port")
  [[ -n "$connection" ]] && args+=(--connection "$connection")
  [[ "$store" == tiered ]] && args+=(--redis "$REDIS")
  # exec through taskset keeps one PID: the one we stop.
  env "${server_env[@]}" "${srv_pre[@]}" dotnet "$dll" "${args[@]}" >"$log" 2>&1 &
  server_pid=$!

  local ready=0
  wait_ready "$server_pid" "$port" || ready=$?
  if [[ $ready == 1 ]]; then
    local rc=0
    wait "$server_pid" || rc=$?
    server_pid=""
    echo "server exited with $rc:" >&2
    cat "$log" >&2
    skip "$name" "server failed to start (exit $rc)"
    return 0
  elif [[ $ready == 2 ]]; then
    skip "$name" "server not ready within 15 s"
    stop_server
    return 0
  fi

  local url="http://127.0.0.1:$port" seed key=""
  if [[ "$mode" == replay ]]; then
    key="replay-$run_id-$name"
    local status
    status="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/orders" \
      -H 'Content-Type: application/json' -H "Idempotency-Key: $key" --data '{"amount":42}')"
    if [[ "$status" != 201 ]]; then
      skip "$name" "seed request answered $status"
      stop_server
      return 0
    fi
    seed="$key"
  else
    seed="$run_id-$name"
  fi

  # Warm up (JIT, tiered PGO, connection pools) with the same traffic, then measure.
  local warm_seed="$seed-warm"
  [[ "$mode" == replay ]] && warm_seed="$seed"
  "${wrk_pre[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s orders.lua "$url" -- "$mode" "$warm_seed" >/dev/null 2>&1 || true

  # Pinned cases only: the unpinned ones share both cores with PostgreSQL or Redis, which bare does not have.
  local bracket_before="" bracket_after=""
  local bracketed=0
  if [[ "$name" != bare* && $unpinned == 0 ]]; then bracketed=1; fi
  if [[ $bracketed == 1 ]]; then
    # Frozen meanwhile: the case's server, just warmed up, may still be compiling or collecting on the same core.
    kill -STOP "$server_pid" 2>/dev/null || true
    bracket_before="$(bracket_rps "$name-before")"
    kill -CONT "$server_pid" 2>/dev/null || true
  fi

  local before after line
  before="$(stats "$port")"
  "${wrk_pre[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s orders.lua "$url" -- "$mode" "$seed" >"$work/$name.wrk" 2>&1
  after="$(stats "$port")"
  stop_server # first: nothing of the case (a store's background work) may run while bare is measured after it
  [[ $bracketed == 1 ]] && bracket_after="$(bracket_rps "$name-after")"

  line="$(grep '^BENCH ' "$work/$name.wrk" || true)"
  if [[ -z "$line" ]]; then
    cat "$work/$name.wrk" >&2
    skip "$name" "wrk printed no result"
    return 0
  fi
  local requests rps p50 p99 errors runs
  requests="$(field "$line" requests)"
  rps="$(field "$line" rps)"
  p50="$(field "$line" p50_ms)"
  p99="$(field "$line" p99_ms)"
  errors=$(( $(field "$line" err_connect) + $(field "$line" err_read) + $(field "$line" err_write) + $(field "$line" err_status) + $(field "$line" err_timeout) ))
  local d
  d() { echo $(( $(json_field "$after" "$1") - $(json_field "$before" "$1") )); }
  runs="$(d executions)"
  local exceptions allocated gcs pause workitems cpu
  exceptions="$(d exceptions)"
  allocated="$(d allocatedBytes)"
  gcs="$(d gen0)/$(d gen1)/$(d gen2)"
  pause="$(d gcPauseMicroseconds)"
  workitems="$(d threadPoolWorkItems)"
  cpu="$(d cpuMicroseconds)"
  local jit
  jit="$(d jitMethods)"
  printf '   %s req/s, p50 %s ms, p99 %s ms, %s requests, handler ran %s times, %s errors, %s exceptions, %s bytes allocated, GCs %s\n' \
    "$rps" "$p50" "$p99" "$requests" "$runs" "$errors" "$exceptions" "$allocated" "$gcs"

  # Brackets that disagree mean the box changed speed during the case, which then compares with neither of them:
  # measure it again on a fresh server. This rejects a measurement for what the baseline did, whichever way the case
  # went, and results.md lists every rejected attempt.
  if [[ -n "$bracket_before" && -n "$bracket_after" && $attempt -lt $ATTEMPTS ]]; then
    local apart
    apart="$(awk -v a="$bracket_before" -v b="$bracket_after" 'BEGIN { printf "%.1f", 200 * (a > b ? a - b : b - a) / (a + b) }')"
    if awk -v p="$apart" -v t="$BRACKET_TOLERANCE" 'BEGIN { exit !(p > t) }'; then
      echo "   bare brackets ${bracket_before%.*} / ${bracket_after%.*} req/s are $apart % apart: measuring again"
      printf -- '- %s, attempt %d: %.0f req/s (%.2f× its brackets) between bare runs of %.0f and %.0f req/s, %s %% apart: measured again\n' \
        "$name" "$attempt" "$rps" "$(awk -v r="$rps" -v a="$bracket_before" -v b="$bracket_after" 'BEGIN { print 2 * r / (a + b) }')" \
        "$bracket_before" "$bracket_after" "$apart" >>"$remeasured"
      # A fresh store too: a SQLite file would otherwise start with every key of the rejected attempt.
      [[ "$store" == sqlite ]] && connection="${connection%.db}-attempt$((attempt + 1)).db"
      run_case "$name" "$store" "$mode" "$connection" $((attempt + 1))
      return 0
    fi
  fi

  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$rps" "$p50" "$p99" "$requests" "$runs" "$errors" \
    "$exceptions" "$allocated" "$gcs" "$pause" "$workitems" "$cpu" "$jit" "$bracket_before" "$bracket_after" >>"$rows"
}

wait_ready() { # pid port -> 0 once /stats answers, 1 if the process exited, 2 after 15 s
  for _ in $(seq 150); do
    kill -0 "$1" 2>/dev/null || return 1
    curl -sf "http://127.0.0.1:$2/stats" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 2
}

stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}

# A bare server kept running for the whole run, warmed once. Each pinned case's timed run is bracketed by a short bare
# measurement on it, right before and right after, and the case's ratio is taken against those two: the box's slow
# periods last minutes, so a baseline measured seconds away tracks them where bare-1..3, minutes apart, do not.
start_bracket_server() {
  [[ "$BRACKET" == 0 || "$BRACKET" == 0s ]] && return 0
  local port
  port="$(free_port)"
  env "${server_env[@]}" "${server_prefix[@]}" dotnet "$dll" --store none --port "$port" >"$work/bracket.log" 2>&1 &
  bracket_pid=$!
  if wait_ready "$bracket_pid" "$port"; then
    bracket_url="http://127.0.0.1:$port"
    "${wrk_prefix[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s orders.lua "$bracket_url" -- new "$run_id-bracket-warm" >/dev/null 2>&1 || true
    return 0
  fi
  echo "bracketing bare server did not start; ratios use the bare mean only" >&2
  kill "$bracket_pid" 2>/dev/null || true
  wait "$bracket_pid" 2>/dev/null || true
  bracket_pid=""
}

bracket_rps() { # tag -> req/s of a short bare run on the bracketing server, or nothing (never fails: set -e)
  [[ -n "$bracket_url" ]] && kill -0 "$bracket_pid" 2>/dev/null || return 0
  local line rps
  line="$("${wrk_prefix[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$BRACKET" -s orders.lua "$bracket_url" -- new "$run_id-bracket-$1" 2>/dev/null | grep '^BENCH ' || true)"
  [[ -n "$line" ]] || return 0
  rps="$(field "$line" rps)"
  if awk -v r="$rps" 'BEGIN { exit !(r > 0) }'; then echo "$rps"; fi
}

# ---- the run: bare measured before, between and after the Idem cases ------------------------------------------
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

start_bracket_server
run_case bare-1 none new
run_case memory-new memory new
run_case memory-replay memory replay
run_case bare-2 none new
run_case sqlite-new sqlite new "$work/sqlite-new.db"
run_case sqlite-replay sqlite replay "$work/sqlite-replay.db"
# A local PostgreSQL starts only now and stops right after its cases: started first, its start-up work shared the CPU
# with the first cases (bare-1 and memory-new ran 30-40 % slower per request in runs that started it before them).
if [[ $local_postgres == 1 ]] && { wanted postgres-new || wanted postgres-replay; }; then
  # The store multiplexes its statements over its pool; 2 connections per core keep the server's backends busy without
  # a backend (and a context switch) per in-flight request. A connection string given in IDEM_BENCH_POSTGRES is used as is.
  if idem_start_postgres "$work"; then POSTGRES="$IDEM_PG_CONNECTION;Maximum Pool Size=$((2 * $(nproc)))"; fi
fi
if [[ -n "$POSTGRES" ]]; then
  run_case postgres-new postgres new "$POSTGRES"
  run_case postgres-replay postgres replay "$POSTGRES"
else
  for c in postgres-new postgres-replay; do
    wanted "$c" && { echo "== $c =="; skip "$c" "no PostgreSQL (IDEM_BENCH_POSTGRES=off or it failed to start)"; }
  done
fi
if [[ $local_postgres == 1 ]]; then idem_stop_postgres || true; fi
# Redis, and the tiered store (claims in PostgreSQL, replays read through Redis), started the same way as PostgreSQL.
if [[ $local_redis == 1 ]] && { wanted redis-new || wanted redis-replay || wanted tiered-new || wanted tiered-replay; }; then
  idem_start_redis "$work" && REDIS="$IDEM_REDIS_ENDPOINT"
fi
if [[ -n "$REDIS" ]]; then
  run_case redis-new redis new "$REDIS"
  run_case redis-replay redis replay "$REDIS"
  if [[ $local_postgres == 1 ]] && { wanted tiered-new || wanted tiered-replay; }; then
    mkdir -p "$work/tiered" && chmod 755 "$work" # its own data directory; the postgres user must reach it
    if idem_start_postgres "$work/tiered"; then POSTGRES="$IDEM_PG_CONNECTION;Maximum Pool Size=$((2 * $(nproc)))"; else POSTGRES=""; fi
  fi
  if [[ -n "$POSTGRES" ]]; then
    run_case tiered-new tiered new "$POSTGRES"
    run_case tiered-replay tiered replay "$POSTGRES"
  else
    for c in tiered-new tiered-replay; do wanted "$c" && { echo "== $c =="; skip "$c" "no PostgreSQL"; }; done
  fi
  if [[ $local_postgres == 1 ]]; then idem_stop_postgres || true; fi
else
  for c in redis-new redis-replay tiered-new tiered-replay; do
    wanted "$c" && { echo "== $c =="; skip "$c" "no Redis (IDEM_BENCH_REDIS=off or it failed to start)"; }
  done
fi
if [[ $local_redis == 1 ]]; then idem_stop_redis || true; fi
run_case bare-3 none new

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- the table ----------------------------------------------------------------------------------------------------
commit="$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git -C "$here/.." status --porcelain -- src benchmarks ':!benchmarks/results.md' 2>/dev/null | grep -q . && echo ' (uncommitted changes)' || true)"

awk -F'\t' -v started="$started" -v commit="$commit$dirty" -v pin="$pin_note" \
  -v wrkargs="wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP)" \
  -v tiering="$tiering_note$spin_note" -v bracket="$BRACKET" -v cpus="$(nproc)" -v load1="$load_before" -v load2="$load_after" -v dotnet="$(dotnet --version)" '
function target(name) {
  if (name == "memory-new") return "ratio:0.75"
  if (name == "memory-replay") return "ratio:0.85"
  if (name == "sqlite-new") return "ratio:0.20"
  if (name == "postgres-new") return "rps:6000"
  if (name == "postgres-replay") return "rps:15000"
  return ""
}
{
  n++; name[n] = $1; mode[n] = $2; rps[n] = $3; p50[n] = $4; p99[n] = $5; req[n] = $6; runs[n] = $7; err[n] = $8; note[n] = $8
  exc[n] = $9; alloc[n] = $10; gcs[n] = $11; pause[n] = $12; items[n] = $13; cpu[n] = $14; jit[n] = $15
  bb[n] = $16; ba[n] = $17
  if ($1 ~ /^bare/ && $2 != "skip") {
    bn++; bsum += $3
    if (bmin == "" || $3 < bmin) bmin = $3
    if (bmax == "" || $3 > bmax) bmax = $3
    blist = blist (blist == "" ? "" : ", ") sprintf("%.0f", $3)
  }
}
END {
  bmean = bn ? bsum / bn : 0
  print "# Idem HTTP benchmark results"
  print ""
  printf "Run %s, commit %s, .NET SDK %s, %d CPUs, %s, %s, server GC, %s.\n", started, commit, dotnet, cpus, pin, wrkargs, tiering
  printf "Load average before/after: %s / %s (the box is shared: read the ratios, not the absolute numbers).\n", load1, load2
  print ""
  if (bn) printf "Bare baseline: mean **%.0f req/s** over %d interleaved runs (%s); spread (max-min)/mean = %.1f%%.\n", bmean, bn, blist, 100 * (bmax - bmin) / bmean
  print ""
  print "| case | req/s | p50 ms | p99 ms | bare alongside, req/s | ratio to bare | target | pass/fail | handler runs / requests |"
  print "|---|---:|---:|---:|---:|---:|---|---|---|"
  allpass = 1
  for (i = 1; i <= n; i++) {
    t = target(name[i]); tdesc = "—"
    if (t ~ /^ratio:/) tdesc = sprintf("≥ %s× bare", substr(t, 7))
    if (t ~ /^rps:/) tdesc = sprintf("≥ %s req/s", substr(t, 5))
    if (mode[i] == "skip") {
      printf "| %s | — | — | — | — | — | %s | skipped: %s | — |\n", name[i], tdesc, note[i]
      continue
    }
    # Bracketed cases are judged against the bare runs just before and after them; the others against the bare mean.
    alongside = "—"
    ratio = bmean ? rps[i] / bmean : 0
    if (bb[i] > 0 && ba[i] > 0) {
      alongside = sprintf("%.0f / %.0f", bb[i], ba[i])
      ratio = rps[i] / ((bb[i] + ba[i]) / 2)
      bracket_n++
    }
    verdict = "—"
    if (t ~ /^ratio:/) verdict = (ratio >= substr(t, 7) + 0) ? "pass" : "FAIL"
    if (t ~ /^rps:/) verdict = (rps[i] >= substr(t, 5) + 0) ? "pass" : "FAIL"
    # Correctness rides along: every response 2xx, replays never run the handler, new keys run it once each
    # (the handler count may exceed wrk'"'"'s request count by the requests in flight when wrk stops).
    bad = ""
    if (err[i] > 0) bad = bad sprintf(" %d errors/non-2xx;", err[i])
    if (mode[i] == "replay" && runs[i] != 0) bad = bad " replay ran the handler;"
    if (mode[i] == "new" && (runs[i] < req[i] || runs[i] > req[i] + 4096)) bad = bad " handler runs != requests;"
    if (bad != "") verdict = "FAIL:" bad
    if (verdict ~ /^FAIL/) allpass = 0
    printf "| %s | %.0f | %.2f | %.2f | %s | %.2f | %s | %s | %d / %d |\n", name[i], rps[i], p50[i], p99[i], alongside, ratio, tdesc, verdict, runs[i], req[i]
  }
  if (bracket_n) {
    print ""
    print "*bare alongside*: a bare server kept running for the whole run, measured for " bracket " right before and right after"
    print "the case'"'"'s timed run (same pinning, same traffic). Cases with it are judged against the mean of those two; the others"
    print "(bare rows, PostgreSQL, Redis, tiered) against the bare mean above."
  }
  print ""
  print "Server-side diagnostics over the timed run, from GET /stats (process CPU time, GC.GetTotalAllocatedBytes,"
  print "GC.CollectionCount, GC.GetTotalPauseDuration, ThreadPool.CompletedWorkItemCount, first-chance exceptions)."
  print "CPU µs/request is the least noise-sensitive number here: it does not depend on how much CPU the box gave us."
  print ""
  print "JIT methods = methods compiled during the timed run (JitInfo); hundreds mean the warm-up did not finish tiering"
  print "and CPU µs/request includes JIT time."
  print ""
  print "| case | CPU µs/request | allocated KB/request | thread-pool items/request | exceptions/request | GCs gen0/1/2 | GC pause ms | JIT methods |"
  print "|---|---:|---:|---:|---:|---|---:|---:|"
  for (i = 1; i <= n; i++) {
    if (mode[i] == "skip" || req[i] == 0) continue
    printf "| %s | %.1f | %.2f | %.2f | %.3f | %s | %.0f | %d |\n", name[i], cpu[i] / req[i], alloc[i] / req[i] / 1024, items[i] / req[i], exc[i] / req[i], gcs[i], pause[i] / 1000, jit[i]
  }
  print ""
  print "Cases: *bare* = same handler without Idem (new key header sent, ignored); *-new* = a unique Idempotency-Key per"
  print "request (claim + handler + complete); *-replay* = one key seeded before timing, every timed request is a replay."
  print "Ratios are against the bare runs alongside, or else the mean bare rate above. p50/p99 come from wrk'"'"'s latency histogram (its done() callback)."
}' "$rows" >"$results"

if [[ -s "$remeasured" ]]; then
  {
    echo
    echo "Measured again because the bare runs bracketing them differed by more than $BRACKET_TOLERANCE % (the box changed"
    echo "speed during the case; the table shows the attempt whose brackets agreed, or the last one):"
    echo
    cat "$remeasured"
  } >>"$results"
fi

echo
cat "$results"
