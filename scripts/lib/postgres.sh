# Helpers to run a private, throw-away PostgreSQL cluster for benchmarks. Source this
# file; it sets no shell options, and the functions print nothing unless something fails.
#
#   source scripts/lib/postgres.sh
#   pg_start 15432 "$tmp/pg" || exit 1     # returns once the server accepts connections
#   psql -h 127.0.0.1 -p 15432 -U starling starling -c 'select 1'
#   pg_stop "$tmp/pg"
#
# Debian's postgresql-15 binaries (apt-get install postgresql when run as root). The
# cluster listens on 127.0.0.1 only, trusts local connections (user and database
# `starling`), runs without fsync (a benchmark's scratch data), and keeps its data, socket
# and log in <dir>. initdb refuses to run as root, so as root the cluster belongs to the
# `postgres` user.

_pg_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1; }
        bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    fi
    [ -n "$bin" ] || { echo "postgres: no PostgreSQL binaries (Debian: apt-get install postgresql)" >&2; return 1; }
    echo "$bin"
}

# Runs a command as the cluster's owner.
_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_start <port> <dir>
pg_start() {
    local port="${1:-}" dir="${2:-}" bin
    if [ -z "$port" ] || [ -z "$dir" ]; then
        echo "usage: pg_start <port> <dir>" >&2
        return 2
    fi
    bin=$(_pg_bin) || return 1
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd)
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        _pg_as_owner "$bin/initdb" -D "$dir/data" -U starling -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
            || { echo "pg_start: initdb failed, see $dir/initdb.log" >&2; return 1; }
    fi
    _pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100 -c shared_buffers=512MB" \
        >/dev/null || { echo "pg_start: the server did not start, see $dir/postgres.log" >&2; return 1; }
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U starling starling 2>/dev/null || true
}

# pg_stop <dir>
pg_stop() {
    local dir="${1:-}" bin
    [ -n "$dir" ] && [ -f "$dir/data/PG_VERSION" ] || return 0
    bin=$(_pg_bin) || return 1
    _pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
}
