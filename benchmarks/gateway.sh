#!/usr/bin/env bash
# Idem Gateway vs plain YARP on the same upstream, in one run, with wrk. Writes benchmarks/gateway-results.md.
#
#   benchmarks/gateway.sh [seconds per case and round, default 8] [connections, default 32] [rounds, default 3]
#
# Cases (POST /orders with a small JSON body; every process on this machine, loopback only):
#   plain YARP            the baseline: YARP forwarding to the upstream, no Idem
#   protection off        Idem Gateway with every route unprotected: what the gateway's plumbing costs by itself
#   Idem in-memory, new   a new Idempotency-Key per request: claim, forward, capture, complete
#   Idem SQLite, new      the same on the embedded SQLite store (skipped, and said so, when this build has no SQLite store)
#   Idem replay           one key for every request: replayed from the store, the upstream is not called
# Ratios are against plain YARP. Targets: in-memory >= 0.8x, SQLite >= 0.5x, replay >= 1x.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-8}"
CONNECTIONS="${2:-32}"
ROUNDS="${3:-3}"
THREADS=2
WARMUP="${WARMUP:-6}"
# As in run.sh: methods are promoted to optimised code as soon as they are hot, so the warm-up is enough for every
# process (the default 100 ms call-counting delay keeps restarting while a server is busy).
export DOTNET_TC_CallCountingDelayMs=0
OUT=benchmarks/gateway-results.md
WORK=$(mktemp -d /tmp/idem-gateway-bench.XXXXXX)
PIDS=()
log() { printf '[gateway.sh] %s\n' "$*" >&2; }
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { log "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { # url
  for _ in $(seq 1 150); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done
  return 1
}

log "building (Release)"
dotnet build src/Idem.Gateway -c Release -nologo -v q >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
dotnet build benchmarks/Idem.Gateway.Bench -c Release -nologo -v q >>"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
GATEWAY=src/Idem.Gateway/bin/Release/net10.0/Idem.Gateway.dll
BENCH=benchmarks/Idem.Gateway.Bench/bin/Release/net10.0/Idem.Gateway.Bench.dll

UP_PORT=$(free_port)
dotnet "$BENCH" upstream --urls "http://127.0.0.1:$UP_PORT" >"$WORK/upstream.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/count" || { log "upstream did not start"; exit 1; }
UPSTREAM="http://127.0.0.1:$UP_PORT"

# New keys: each wrk thread numbers its own requests under a prefix unique to this wrk invocation.
newkeys_script() { # file
  cat >"$1" <<LUA
local counter = 0
local prefix = "run-$(date +%s%N)-"
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function request()
  counter = counter + 1
  return wrk.format("POST", "/orders", { ["Content-Type"] = "application/json", ["Idempotency-Key"] = prefix .. tid .. "-" .. counter }, '{"amount":42,"currency":"EUR"}')
end
LUA
}
cat >"$WORK/replay.lua" <<LUA
function request()
  return wrk.format("POST", "/orders", { ["Content-Type"] = "application/json", ["Idempotency-Key"] = "replay-key" }, '{"amount":42,"currency":"EUR"}')
end
LUA

# The proxy's own CPU time (user + system, clock ticks) from /proc: per request it does not depend on how much CPU the
# shared box gave the run, unlike req/s, so it is the steadier comparison.
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_us() { # case -> proxy CPU µs per request
  [ -n "${REQUESTS[$1]:-}" ] && [ "${REQUESTS[$1]}" -gt 0 ] && awk -v t="${CPU_TICKS[$1]}" -v r="${REQUESTS[$1]}" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t * 1e6 / hz / r}' || echo "–"
}
stop_last() { kill "${PIDS[-1]}" 2>/dev/null || true; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'; }
start_proxy() { # name, command... ; sets PORT, appends to PIDS
  local name=$1; shift
  PORT=$(free_port)
  "$@" --urls "http://127.0.0.1:$PORT" >"$WORK/$name.log" 2>&1 & PIDS+=($!)
  if ! wait_http "http://127.0.0.1:$PORT/"; then
    log "$name did not start: $(tail -c 300 "$WORK/$name.log")"
    stop_last
    return 1
  fi
}

declare -A PORTS RPS P50 P99 NOTE SAMPLES ALL
GW_ARGS=(--upstream "$UPSTREAM" --Logging:LogLevel:Default=Warning)

# Every server runs for the whole benchmark; the cases take turns, round after round, so that load from other work on
# the machine spreads over all of them instead of landing on one. Each case's figure is its median round.
declare -A PROXY_PID CPU_TICKS REQUESTS
start_proxy yarp dotnet "$BENCH" yarp "$UPSTREAM" || exit 1; PORTS[plain]=$PORT; PROXY_PID[plain]=${PIDS[-1]}
start_proxy idem-memory dotnet "$GATEWAY" "${GW_ARGS[@]}" --Idem:Store=InMemory || exit 1; PORTS[memory]=$PORT; PORTS[replay]=$PORT; PROXY_PID[memory]=${PIDS[-1]}; PROXY_PID[replay]=${PIDS[-1]}
start_proxy idem-off dotnet "$GATEWAY" "${GW_ARGS[@]}" --Idem:Store=InMemory --Idem:Default:Enabled=false || exit 1; PORTS[off]=$PORT; PROXY_PID[off]=${PIDS[-1]}
CASES=(plain off memory replay)
if start_proxy idem-sqlite dotnet "$GATEWAY" "${GW_ARGS[@]}" --Idem:Store=Sqlite --Idem:Sqlite:Path="$WORK/idem.db"; then
  PORTS[sqlite]=$PORT; PROXY_PID[sqlite]=${PIDS[-1]}; CASES+=(sqlite)
else
  NOTE[sqlite]="$(grep -o 'the SQLite store has not been merged yet' "$WORK/idem-sqlite.log" | head -1)"
fi
curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -H 'Idempotency-Key: replay-key' --data '{"amount":42,"currency":"EUR"}' "http://127.0.0.1:${PORTS[replay]}/orders"

script_for() { # case -> lua file
  if [ "$1" = replay ]; then echo "$WORK/replay.lua"; else local f="$WORK/$1-$RANDOM.lua"; newkeys_script "$f"; echo "$f"; fi
}
# Warm-up at full load: tiered compilation must reach its final code in every proxy before timing, or the proxy with
# more code (Idem's) is measured partly on instrumented code while plain YARP already runs optimised.
for c in "${CASES[@]}"; do wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$(script_for "$c")" "http://127.0.0.1:${PORTS[$c]}/orders" >/dev/null 2>&1 || true; done
for round in $(seq 1 "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    out="$WORK/$c-$round.wrk"
    before=$(proc_ticks "${PROXY_PID[$c]}")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$(script_for "$c")" "http://127.0.0.1:${PORTS[$c]}/orders" >"$out" 2>&1
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
    CPU_TICKS[$c]=$(( ${CPU_TICKS[$c]:-0} + $(proc_ticks "${PROXY_PID[$c]}") - before ))
    REQUESTS[$c]=$(( ${REQUESTS[$c]:-0} + $(awk '/requests in/ {print $1}' "$out") ))
    SAMPLES[$c]="${SAMPLES[$c]:-} $rps:$round"
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$out"); [ -n "$non2xx" ] && NOTE[$c]="$non2xx non-2xx in round $round"
    log "round $round, $c: $rps req/s"
  done
done
for c in "${CASES[@]}"; do
  median=$(tr ' ' '\n' <<<"${SAMPLES[$c]}" | grep . | sort -t: -k1,1n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
  RPS[$c]=${median%%:*}
  P50[$c]=$(awk '$1=="50%" {print $2}' "$WORK/$c-${median##*:}.wrk")
  P99[$c]=$(awk '$1=="99%" {print $2}' "$WORK/$c-${median##*:}.wrk")
  ALL[$c]=$(tr ' ' '\n' <<<"${SAMPLES[$c]}" | grep . | cut -d: -f1 | paste -sd/)
done

ratio() { [ -n "${RPS[$1]:-}" ] && [ -n "${RPS[plain]:-}" ] && awk -v a="${RPS[$1]}" -v b="${RPS[plain]}" 'BEGIN {printf "%.2f×", a/b}' || echo "n/a"; }
verdict() { # case, target
  [ -n "${RPS[$1]:-}" ] || { echo "not run"; return; }
  awk -v a="${RPS[$1]}" -v b="${RPS[plain]}" -v t="$2" 'BEGIN {print (a/b >= t) ? "met" : "missed"}'
}
row() { # label, case, target
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${RPS[$2]:-–}" "${ALL[$2]:-–}" "${P50[$2]:-–}" "${P99[$2]:-–}" "$(cpu_us "$2")" "$(ratio "$2")" "$3" "$( [ "$3" = "–" ] && echo "reference" || verdict "$2" "${3%×*}")${NOTE[$2]:+ (${NOTE[$2]})}"
}

{
  echo "# Idem Gateway vs plain YARP"
  echo
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), .NET $(dotnet --version)."
  echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s per case and round, $ROUNDS interleaved rounds, median shown; POST /orders with a 30-byte JSON body; upstream, proxy and wrk share the machine (loopback)."
  echo "Produced by \`benchmarks/gateway.sh\`; numbers from one run, on a machine that other work may share."
  echo
  echo "Load average when it ended: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| Case | req/s (median) | rounds | p50 | p99 | proxy CPU µs/request | vs plain YARP | target | |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
  row "plain YARP (new keys, ignored)" plain "–"
  row "Idem Gateway, protection off (plumbing only)" off "–"
  row "Idem Gateway, in-memory, new keys" memory "0.8×"
  row "Idem Gateway, SQLite, new keys" sqlite "0.5×"
  row "Idem Gateway, replay (one key)" replay "1×"
} >"$OUT"
cat "$OUT"
