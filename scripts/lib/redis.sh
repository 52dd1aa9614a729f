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

# redis_start <port> <dir>
redis_start() {
    local port="${1:-}" dir="${2:-}"
    if [ -z "$port" ] || [ -z "$dir" ]; then
        echo "usage: redis_start <port> <dir>" >&2
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
        --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log" >/dev/null; then
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
