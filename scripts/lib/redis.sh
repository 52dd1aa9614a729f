# Helpers to run a private, throw-away Redis for tests and benchmarks. Source this file;
# it sets no shell options, and the functions print nothing unless something fails.
#
#   source scripts/lib/redis.sh
#   redis_start 6390 "$tmp/redis" || exit 1    # returns once the server answers PING
#   export REDIS_URL=redis://127.0.0.1:6390
#   ...
#   redis_stop "$tmp/redis"
#
# The server listens on 127.0.0.1 only, keeps nothing on disk (no RDB, no AOF) and writes
# its pid file and log into <dir>.

# redis_start <port> <dir> [extra redis-server options...]
redis_start() {
    local port="${1:-}" dir="${2:-}"
    if [ -z "$port" ] || [ -z "$dir" ]; then
        echo "usage: redis_start <port> <dir> [redis-server options...]" >&2
        return 2
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
            echo "redis_start: redis-server is not installed (Debian: apt-get install redis-server)" >&2
            return 1
        fi
        # A bare machine may have no package lists yet.
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1; then
            apt-get update -qq >/dev/null 2>&1
            if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1; then
                echo "redis_start: apt-get install redis-server failed" >&2
                return 1
            fi
        fi
        # The Debian package starts a system-wide server; that one is not ours to touch.
    fi
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
        echo "redis_start: something already answers on port $port" >&2
        return 1
    fi
    mkdir -p "$dir" || return 1
    rm -f "$dir/redis.pid"
    if ! redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log" "${@:3}" >/dev/null; then
        echo "redis_start: redis-server failed to start (see $dir/redis.log)" >&2
        return 1
    fi
    local _i pid
    for _i in $(seq 1 100); do
        if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; then
            # Make sure it is our server that answers, not one that won a race for the port.
            pid="$(cat "$dir/redis.pid" 2>/dev/null)"
            if [ -n "$pid" ] && redis-cli -p "$port" info server 2>/dev/null | grep -q "^process_id:$pid"; then
                return 0
            fi
        fi
        sleep 0.1
    done
    echo "redis_start: no PONG from our server on port $port after 10 s (see $dir/redis.log)" >&2
    redis_stop "$dir" 2>/dev/null
    return 1
}

# redis_stop <dir>: stops the server started with that <dir>, by its pid file.
redis_stop() {
    local dir="${1:-}"
    if [ -z "$dir" ]; then
        echo "usage: redis_stop <dir>" >&2
        return 2
    fi
    local pid _i
    pid="$(cat "$dir/redis.pid" 2>/dev/null)"
    if [ -z "$pid" ]; then
        return 0
    fi
    kill "$pid" 2>/dev/null
    for _i in $(seq 1 50); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/redis.pid"
            return 0
        fi
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    rm -f "$dir/redis.pid"
    return 0
}

# redis_cluster_start <first_port> <dir>: a throw-away Redis Cluster of three primaries (no
# replicas) on <first_port>, +1 and +2, each in <dir>/node-<port>; returns once every node
# reports cluster_state:ok. Stop it with redis_cluster_stop <dir>.
#
# Three is the smallest cluster `redis-cli --cluster create` accepts, and enough for keys
# of one batch to live on different nodes. The cluster bus uses <port> + 10000.
redis_cluster_start() {
    local first="${1:-}" dir="${2:-}"
    if [ -z "$first" ] || [ -z "$dir" ]; then
        echo "usage: redis_cluster_start <first_port> <dir>" >&2
        return 2
    fi
    local ports=("$first" "$((first + 1))" "$((first + 2))") port nodes=() _i
    for port in "${ports[@]}"; do
        if ! redis_start "$port" "$dir/node-$port" --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 5000; then
            redis_cluster_stop "$dir"
            return 1
        fi
        nodes+=("127.0.0.1:$port")
    done
    if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1; then
        echo "redis_cluster_start: redis-cli --cluster create failed (see $dir/create.log)" >&2
        redis_cluster_stop "$dir"
        return 1
    fi
    for _i in $(seq 1 200); do
        local ok=0
        for port in "${ports[@]}"; do
            redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && ok=$((ok + 1))
        done
        if [ "$ok" = 3 ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "redis_cluster_start: no cluster_state:ok after 20 s (see $dir/node-*/redis.log)" >&2
    redis_cluster_stop "$dir"
    return 1
}

# redis_cluster_free_port: prints a first port for redis_cluster_start whose three client
# ports and three bus ports (+10000) are all free on 127.0.0.1.
redis_cluster_free_port() {
    python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    p = random.randrange(20000, 30000)
    if all(free(q) for q in (p, p + 1, p + 2, p + 10000, p + 10001, p + 10002)):
        print(p)
        break
else:
    raise SystemExit("no free ports for a Redis Cluster")
PY
}

# redis_cluster_stop <dir>: stops every node started by redis_cluster_start with that <dir>.
redis_cluster_stop() {
    local dir="${1:-}" node
    if [ -z "$dir" ]; then
        echo "usage: redis_cluster_stop <dir>" >&2
        return 2
    fi
    for node in "$dir"/node-*; do
        [ -d "$node" ] && redis_stop "$node"
    done
    return 0
}
