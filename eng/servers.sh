# Shared by test.sh and benchmarks/run.sh: install and start throwaway PostgreSQL and Redis servers on free
# loopback ports in a work directory, and stop them by PID/data dir. Source it; nothing runs on its own.
# PostgreSQL refuses to run as root, so as root it runs as the postgres user with a data dir that user owns.

IDEM_PG_BIN=/usr/lib/postgresql/15/bin

idem_log() { printf '[idem] %s\n' "$*" >&2; }

idem_install_missing() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  [ -x "$IDEM_PG_BIN/initdb" ] || need+=(postgresql)
  command -v wrk >/dev/null 2>&1 || [ "${IDEM_NEED_WRK:-0}" = 0 ] || need+=(wrk)
  command -v node >/dev/null 2>&1 || need+=(nodejs)   # the gateway tests run a third-party Express upstream
  command -v npm >/dev/null 2>&1 || need+=(npm)
  [ -x /usr/bin/chromium ] || need+=(chromium)   # the demo page's browser tests (Playwright drives Debian's chromium)
  command -v spin >/dev/null 2>&1 || need+=(spin gcc)   # docs/model/check.sh: the protocol's model, checked in CI
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)   # promtool tests the alert rules in deploy/prometheus
  if [ ${#need[@]} -gt 0 ]; then
    idem_log "installing ${need[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

idem_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

idem_as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# idem_start_postgres WORKDIR: sets IDEM_PG_CONNECTION, IDEM_PG_DATA, IDEM_PG_OPTIONS. The server runs with fsync,
# synchronous_commit and full_page_writes off: tests and most benchmarks measure Idem's work, not the disk's.
idem_start_postgres() {
  local port; port=$(idem_free_port)
  IDEM_PG_OPTIONS="-p $port -c listen_addresses=127.0.0.1 -k $1/pgsock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
  idem_pg_cluster "$1" "$IDEM_PG_OPTIONS" --no-sync || return 1
  IDEM_PG_DATA="$1/pg"
  IDEM_PG_CONNECTION="Host=127.0.0.1;Port=$port;Username=postgres;Database=postgres;Pooling=true;Maximum Pool Size=100"
  idem_log "PostgreSQL on 127.0.0.1:$port"
}

# idem_start_postgres_durable WORKDIR: a second server with PostgreSQL's default durability (every commit flushed to
# disk), for benchmarks that compare writes as a production server makes them. Sets IDEM_PG_DURABLE_CONNECTION and
# IDEM_PG_DURABLE_DATA.
idem_start_postgres_durable() {
  local port; port=$(idem_free_port)
  idem_pg_cluster "$1" "-p $port -c listen_addresses=127.0.0.1 -k $1/pgsock -c max_connections=300" || return 1
  IDEM_PG_DURABLE_DATA="$1/pg"
  IDEM_PG_DURABLE_CONNECTION="Host=127.0.0.1;Port=$port;Username=postgres;Database=postgres;Pooling=true;Maximum Pool Size=100"
  idem_log "PostgreSQL (durable) on 127.0.0.1:$port"
}

# idem_pg_cluster WORKDIR OPTIONS [INITDB_FLAGS...]: initdb and start one server; its files (data, socket, log)
# live in directories the postgres user owns.
idem_pg_cluster() {
  local dir="$1" options="$2"; shift 2
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  mkdir -p "$dir/pg" "$dir/pgsock" "$dir/pglog"
  chmod 755 "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir/pg" "$dir/pgsock" "$dir/pglog"
  idem_as_postgres "$IDEM_PG_BIN/initdb" -D "$dir/pg" -U postgres -A trust "$@" >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  idem_as_postgres "$IDEM_PG_BIN/pg_ctl" -D "$dir/pg" -l "$dir/pglog/pg.log" -w -t 60 -o "$options" start >/dev/null \
    || { cat "$dir/pglog/pg.log" >&2; return 1; }
}

idem_stop_postgres() {
  [ -n "${IDEM_PG_DATA:-}" ] && idem_as_postgres "$IDEM_PG_BIN/pg_ctl" -D "$IDEM_PG_DATA" -m immediate stop >/dev/null 2>&1
  IDEM_PG_DATA=""
  [ -n "${IDEM_PG_DURABLE_DATA:-}" ] && idem_as_postgres "$IDEM_PG_BIN/pg_ctl" -D "$IDEM_PG_DURABLE_DATA" -m immediate stop >/dev/null 2>&1
  IDEM_PG_DURABLE_DATA=""
}

# idem_start_redis WORKDIR: sets IDEM_REDIS_ENDPOINT and IDEM_REDIS_PID.
idem_start_redis() {
  local dir="$1" port; port=$(idem_free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" --daemonize no >"$dir/redis.log" 2>&1 &
  IDEM_REDIS_PID=$!
  for _ in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  IDEM_REDIS_ENDPOINT="127.0.0.1:$port"
  idem_log "Redis on $IDEM_REDIS_ENDPOINT"
}

idem_stop_redis() {
  [ -n "${IDEM_REDIS_PID:-}" ] && kill "$IDEM_REDIS_PID" 2>/dev/null
  IDEM_REDIS_PID=""
}

# idem_start_redis_cluster WORKDIR: a real Redis Cluster on loopback, 3 masters + 3 replicas, each node on a free port
# in its own directory, without persistence; node timeout 1 s so a killed master's replica takes over within seconds.
# Sets IDEM_REDIS_CLUSTER (comma-separated endpoints: one StackExchange.Redis configuration string) and
# IDEM_REDIS_CLUSTER_PIDS (space-separated, in the order of the endpoints).
idem_start_redis_cluster() {
  local dir="$1/redis-cluster" ports=() pids=() port
  mkdir -p "$dir"
  for _ in 1 2 3 4 5 6; do
    # The cluster bus listens on port + 10000: both must be free and below 65536.
    for _ in $(seq 1 50); do
      port=$(idem_free_port)
      [ "$port" -lt 55536 ] && python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1]))); s.close()' \
        $((port + 10000)) 2>/dev/null && break
    done
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir/$port" --daemonize no \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
      --cluster-replica-validity-factor 0 --logfile "$dir/$port/redis.log" >/dev/null 2>&1 &
    pids+=($!); ports+=("$port")
  done
  IDEM_REDIS_CLUSTER_PIDS="${pids[*]}"
  local endpoints=() ready
  for port in "${ports[@]}"; do
    endpoints+=("127.0.0.1:$port")
    for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${endpoints[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
    || { cat "$dir/create.log" >&2; idem_stop_redis_cluster; return 1; }
  # Every node must agree the cluster is up (all slots served) and every replica must be in sync with its master
  # before a client connects.
  for _ in $(seq 1 200); do
    ready=1
    for port in "${ports[@]}"; do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ready=0
      if redis-cli -p "$port" info replication 2>/dev/null | grep -q 'role:slave'; then
        redis-cli -p "$port" info replication 2>/dev/null | grep -q 'master_link_status:up' || ready=0
      fi
    done
    [ "$(redis-cli -p "${ports[0]}" cluster nodes 2>/dev/null | grep -c slave)" = 3 ] || ready=0
    [ "$ready" = 1 ] && break
    sleep 0.1
  done
  [ "$ready" = 1 ] || { idem_log "Redis Cluster did not come up"; idem_stop_redis_cluster; return 1; }
  IDEM_REDIS_CLUSTER=$(IFS=,; echo "${endpoints[*]}")
  idem_log "Redis Cluster on $IDEM_REDIS_CLUSTER"
}

idem_stop_redis_cluster() {
  local pid
  for pid in ${IDEM_REDIS_CLUSTER_PIDS:-}; do kill -9 "$pid" 2>/dev/null; done
  for pid in ${IDEM_REDIS_CLUSTER_PIDS:-}; do wait "$pid" 2>/dev/null; done
  IDEM_REDIS_CLUSTER_PIDS=""
}
