#!/usr/bin/env bash
# Starts or stops Starling as separate processes on this machine, the way it runs in
# production: a Kafka-protocol broker, Redis, graph-service, post-service, two
# timeline-service replicas, two fan-out workers, and nginx in front routing as the
# Kubernetes Ingress does. Everything listens on loopback only.
#
#   scripts/stack.sh up   [DIR]   build, start everything, print the URLs
#   scripts/stack.sh down [DIR]   stop everything started in DIR (SIGTERM, graceful)
#   scripts/stack.sh replay TRACE [REPORT_DIR] [-- replay options...]
#                                 start the stack in stack-data-replay with the write rate
#                                 limit off (a replay writes far faster than a person),
#                                 replay TRACE against every process and write the report
#                                 (default replay-report-stack); the stack stays up
#
# WRITES_PER_SECOND sets the per-user write rate limit of `up` (default: the services'
# default, 10/s with bursts of 100; 0 disables).
#
# DIR (default ./stack-data) holds data, logs and pid files. Ports: the public API (nginx)
# 8080, broker 19092, Redis 16379, graph 8081, posts 8082, timeline 8083 and 8086, fan-out
# 8084 and 8085 (health and metrics). Clients use http://127.0.0.1:8080 for everything.
#
# Storage: each of graph- and post-service keeps an embedded store in its own directory,
# unless SCYLLA_URI (host:port,...) names a ScyllaDB cluster you run; then both use it,
# in keyspace SCYLLA_KEYSPACE (default starling), created and migrated at start-up.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib/kafka.sh"
source "$root/scripts/lib/redis.sh"
source "$root/scripts/lib/nginx.sh"

cmd="${1:-}"
if [ "$cmd" = replay ]; then
    trace="${2:?usage: $0 replay TRACE [REPORT_DIR] [-- replay options...]}"
    [ -f "$trace" ] || { echo "no trace file at $trace" >&2; exit 2; }
    shift 2
    report=replay-report-stack
    if [ $# -gt 0 ] && [ "$1" != -- ]; then report=$1; shift; fi
    [ "${1:-}" = -- ] && shift
    replay_dir=stack-data-replay
    if [ -f "$replay_dir/graph-service-8081.pid" ] && kill -0 "$(cat "$replay_dir/graph-service-8081.pid")" 2>/dev/null; then
        echo "a stack is already running in $replay_dir; stop it with: $0 down $replay_dir" >&2
        exit 1
    fi
    WRITES_PER_SECOND=0 "$0" up "$replay_dir"
    metrics=()
    for port in 8081 8082 8083 8086 8084 8085; do metrics+=(--metrics-url "http://127.0.0.1:$port"); done
    STARLING_ADMIN_TOKEN="$(cat "$replay_dir/admin-token")" \
        "$root/target/release/starling" trace replay "$trace" --target http://127.0.0.1:8081 \
        --posts-url http://127.0.0.1:8082 --timeline-url http://127.0.0.1:8083 "${metrics[@]}" \
        --out "$report" "$@"
    echo "report in $report/report.md; the stack is still up: $0 down $replay_dir"
    exit 0
fi
dir="$(mkdir -p "${2:-stack-data}" && cd "${2:-stack-data}" && pwd)"
KAFKA_PORT=19092 REDIS_PORT=16379

start_service() { # role port worker_id
    local role=$1 port=$2 worker=$3
    mkdir -p "$dir/$role-$port"
    # A stable consumer-group identity per process (static membership): a worker that
    # restarts, even after SIGKILL, rejoins as itself and takes its partitions back instead
    # of waiting behind its dead former self (noida-db never expires dead members).
    STARLING__SERVER__WORKER_ID=$worker STARLING__BACKENDS__KAFKA_INSTANCE_ID="$role-$port" \
        "$root/target/release/starling" serve "$role" \
        --bind "127.0.0.1:$port" --data-dir "$dir/$role-$port" \
        >"$dir/$role-$port.out" 2>"$dir/$role-$port.log" &
    echo $! >"$dir/$role-$port.pid"
    for _ in $(seq 1 100); do
        grep -q "listening on" "$dir/$role-$port.out" 2>/dev/null && return 0
        kill -0 "$(cat "$dir/$role-$port.pid")" 2>/dev/null || { cat "$dir/$role-$port.log" >&2; return 1; }
        sleep 0.1
    done
    echo "$role did not start; see $dir/$role-$port.log" >&2
    return 1
}

case "$cmd" in
up)
    echo "building..."
    cargo build --release -p starling --manifest-path "$root/Cargo.toml" -q
    echo "starting broker and redis..."
    kafka_start "$KAFKA_PORT" "$dir/kafka"
    redis_start "$REDIS_PORT" "$dir/redis"
    # Shared by every service: where events and timelines live, who the peers are.
    export STARLING__BACKENDS__KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
    export STARLING__BACKENDS__REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    export STARLING__PEERS__GRAPH_URL="http://127.0.0.1:8081"
    export STARLING__PEERS__POST_URL="http://127.0.0.1:8082"
    if [ -n "${SCYLLA_URI:-}" ]; then
        export STARLING__BACKENDS__SCYLLA_URI="$SCYLLA_URI"
        export STARLING__BACKENDS__SCYLLA_KEYSPACE="${SCYLLA_KEYSPACE:-starling}"
        echo "storage: ScyllaDB at $SCYLLA_URI, keyspace $STARLING__BACKENDS__SCYLLA_KEYSPACE"
    fi
    if [ ! -f "$dir/jwt-secret" ]; then
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/jwt-secret"
    fi
    STARLING__AUTH__JWT_SECRET="$(cat "$dir/jwt-secret")"
    export STARLING__AUTH__JWT_SECRET
    # The operator's token for /admin/v1 (bulk accounts, cache wipe): random per stack.
    if [ ! -f "$dir/admin-token" ]; then
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/admin-token"
    fi
    STARLING__ADMIN__TOKEN="$(cat "$dir/admin-token")"
    export STARLING__ADMIN__TOKEN
    if [ -n "${WRITES_PER_SECOND:-}" ]; then
        export STARLING__RATE_LIMIT__WRITES_PER_SECOND="$WRITES_PER_SECOND"
        echo "write rate limit: ${WRITES_PER_SECOND}/s per user (0: off)"
    fi
    echo "starting services..."
    start_service graph-service 8081 1
    start_service post-service 8082 2
    start_service timeline-service 8083 3
    start_service timeline-service 8086 6
    start_service fanout-worker 8084 4
    start_service fanout-worker 8085 5
    nginx_start 8080 "$dir/nginx" http://127.0.0.1:8081 http://127.0.0.1:8082 \
        http://127.0.0.1:8083,http://127.0.0.1:8086
    cat <<MSG
Starling is up (data and logs in $dir):
  public API        http://127.0.0.1:8080   everything (nginx, routing as k8s/base/ingress.yaml)
  graph-service     http://127.0.0.1:8081   /oauth, /api/v1/apps, /api/v1/accounts..., /admin/v1/accounts
  post-service      http://127.0.0.1:8082   /api/v1/statuses, /api/v1/accounts/{id}/statuses, /api/v1/notifications
  timeline-service  http://127.0.0.1:8083, :8086   /api/v1/timelines, /api/v1/streaming
  fanout-worker     http://127.0.0.1:8084, :8085   /metrics
The operator's token for /admin/v1 is in $dir/admin-token.
Stop with: scripts/stack.sh down $dir
MSG
    ;;
down)
    # The proxy, then the services (they drain into the broker and Redis), then the backends.
    nginx_stop "$dir/nginx" || true
    for pidfile in "$dir"/*-service-*.pid "$dir"/fanout-worker-*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$pidfile"
    done
    kafka_stop "$dir/kafka" || true
    redis_stop "$dir/redis" || true
    echo "stopped"
    ;;
*)
    echo "usage: $0 up|down [DIR] | replay TRACE [REPORT_DIR] [-- replay options...]" >&2
    exit 2
    ;;
esac
