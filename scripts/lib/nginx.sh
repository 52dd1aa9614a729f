# Helpers to run a private nginx in front of Starling's services: one base URL for
# clients, with the path routes of the Kubernetes Ingress (k8s/base/ingress.yaml, read
# here, so the two cannot drift apart) and any number of timeline-service replicas behind
# it. Source this file; the functions print nothing unless something fails.
#
#   source scripts/lib/nginx.sh
#   nginx_start 8080 "$tmp/nginx" http://127.0.0.1:8081 http://127.0.0.1:8082 \
#       http://127.0.0.1:8083,http://127.0.0.1:8086 || exit 1
#   ...
#   nginx_stop "$tmp/nginx"
#
# It listens on 127.0.0.1 only and writes its configuration, pid file, logs and buffers
# into <dir>. Streaming (server-sent events, WebSockets) passes through unbuffered.

_nginx_lib_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# nginx_start <port> <dir> <graph url> <post url> <timeline urls, comma-separated>
nginx_start() {
    local port="${1:-}" dir="${2:-}" graph="${3:-}" posts="${4:-}" timelines="${5:-}"
    if [ -z "$port" ] || [ -z "$dir" ] || [ -z "$graph" ] || [ -z "$posts" ] || [ -z "$timelines" ]; then
        echo "usage: nginx_start <port> <dir> <graph url> <post url> <timeline urls,...>" >&2
        return 2
    fi
    local bin
    bin="$(nginx_binary)" || return 1
    mkdir -p "$dir/tmp" || return 1
    # Workers may run as another user (root starts them as nobody): let them buffer here.
    chmod 0777 "$dir/tmp"
    python3 "$_nginx_lib_dir/nginx_conf.py" "$_nginx_lib_dir/../../k8s/base/ingress.yaml" \
        "$port" "$dir" "$graph" "$posts" "$timelines" >"$dir/nginx.conf" || return 1
    "$bin" -t -q -p "$dir" -c "$dir/nginx.conf" 2>"$dir/check.log" || { cat "$dir/check.log" >&2; return 1; }
    "$bin" -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/error.log" || { cat "$dir/error.log" >&2; return 1; }
    for _ in $(seq 1 50); do
        if [ -s "$dir/nginx.pid" ] && curl -s -o /dev/null "http://127.0.0.1:$port/"; then
            return 0
        fi
        sleep 0.1
    done
    echo "nginx_start: nginx did not answer on port $port; see $dir/error.log" >&2
    return 1
}

# nginx_stop <dir>: stops the nginx started in <dir> (graceful), if any.
nginx_stop() {
    local dir="${1:?usage: nginx_stop <dir>}" pid
    [ -s "$dir/nginx.pid" ] || return 0
    pid="$(cat "$dir/nginx.pid")"
    kill -QUIT "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# nginx_binary: the nginx to run, installed from Debian if missing (as root).
nginx_binary() {
    local bin
    bin="$(command -v nginx || true)"
    [ -z "$bin" ] && [ -x /usr/sbin/nginx ] && bin=/usr/sbin/nginx
    if [ -z "$bin" ]; then
        if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
            echo "nginx_start: nginx is not installed (Debian: apt-get install nginx-light or nginx)" >&2
            return 1
        fi
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null 2>&1; then
            apt-get update -qq >/dev/null 2>&1
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null 2>&1 \
                || { echo "nginx_start: apt-get install nginx failed" >&2; return 1; }
        fi
        # The Debian package may start a system-wide server; that one is not ours to touch.
        bin=/usr/sbin/nginx
    fi
    echo "$bin"
}
