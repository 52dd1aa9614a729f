# Starts and stops a throwaway Kafka-protocol broker for tests and benchmarks.
#
# Source this file, then:
#   kafka_start <port> <dir>   # installs noida-db (once, cached), starts it on 127.0.0.1:<port>
#   kafka_stop <dir>           # stops the broker started with that <dir>
#
# No Kafka distribution installs from the registries we can reach; `noida-db` (PyPI) is a
# Kafka-protocol broker verified with rdkafka 0.39 (see shared/INFRA.md). We run the
# binary inside the Python package rather than the venv's wrapper script: killing the
# wrapper leaves the real broker running.
#
# noida-db keeps its whole state in one JSON file (<dir>/data/kafka.json, ~1 KB per
# record) that it rewrites as it changes, and acknowledges records before that rewrite:
# a SIGKILL loses the last moments of acknowledged records (a SIGTERM stop saves them).
# Use a fresh <dir> per test or benchmark run; a big file slows the broker down.
#
# The venv lives in a cache shared by every run (${STARLING_TOOLS:-~/.cache/starling-tools}),
# so only the first start pays for the install. Data goes to <dir>/data, the pid to
# <dir>/kafka.pid and the broker's output to <dir>/kafka.log.
#
# Meant to be sourced: the functions return non-zero on failure and never `exit`, and they
# do not touch the caller's shell options.

KAFKA_NOIDA_VERSION="${KAFKA_NOIDA_VERSION:-0.2.3}"

# Prints the directory of the installed noida_db package, installing it first if needed.
kafka_noida_dir() {
    local tools="${STARLING_TOOLS:-$HOME/.cache/starling-tools}"
    local venv="$tools/noida-venv"
    local python="$venv/bin/python"
    local dir
    local installed
    installed=$("$python" -c 'import importlib.metadata as m; print(m.version("noida-db"))' 2>/dev/null) || installed=""
    if [ "$installed" != "$KAFKA_NOIDA_VERSION" ] \
        || ! dir=$("$python" -c 'import noida_db, os; print(os.path.dirname(noida_db.__file__))' 2>/dev/null); then
        mkdir -p "$tools" || return 1
        if [ ! -x "$python" ]; then
            python3 -m venv "$venv" >&2 || { echo "kafka: cannot create venv $venv" >&2; return 1; }
        fi
        "$python" -m pip install --quiet --disable-pip-version-check "noida-db==$KAFKA_NOIDA_VERSION" >&2 \
            || { echo "kafka: pip install noida-db==$KAFKA_NOIDA_VERSION failed" >&2; return 1; }
        dir=$("$python" -c 'import noida_db, os; print(os.path.dirname(noida_db.__file__))') || return 1
    fi
    printf '%s\n' "$dir"
}

# True once something accepts TCP connections on 127.0.0.1:<port>.
kafka_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

kafka_start() {
    local port="${1:-}" dir="${2:-}"
    if [ -z "$port" ] || [ -z "$dir" ]; then
        echo "usage: kafka_start <port> <dir>" >&2
        return 2
    fi
    if kafka_port_open "$port"; then
        echo "kafka: port $port is already in use" >&2
        return 1
    fi
    local pkg
    pkg=$(kafka_noida_dir) || return 1
    local bin="$pkg/noida-db"
    if [ ! -x "$bin" ]; then
        echo "kafka: no broker binary at $bin" >&2
        return 1
    fi
    mkdir -p "$dir/data" || return 1
    "$bin" start --only kafka --host 127.0.0.1 --kafka-port "$port" --data-dir "$dir/data" \
        >"$dir/kafka.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/kafka.pid"
    local i
    for i in $(seq 1 300); do
        if kafka_port_open "$port"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "kafka: broker exited during start-up; see $dir/kafka.log:" >&2
            tail -n 20 "$dir/kafka.log" >&2
            rm -f "$dir/kafka.pid"
            return 1
        fi
        sleep 0.1
    done
    echo "kafka: broker did not listen on 127.0.0.1:$port within 30 s; see $dir/kafka.log" >&2
    kafka_stop "$dir"
    return 1
}

kafka_stop() {
    local dir="${1:-}"
    if [ -z "$dir" ]; then
        echo "usage: kafka_stop <dir>" >&2
        return 2
    fi
    local pidfile="$dir/kafka.pid"
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # A clean stop writes the broker's state to disk, which takes a while once the
        # data has grown; give it KAFKA_STOP_TIMEOUT seconds (default 30) before SIGKILL.
        local grace="${KAFKA_STOP_TIMEOUT:-30}"
        kill -TERM "$pid" 2>/dev/null
        local i
        for i in $(seq 1 $((grace * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "kafka: broker $pid ignored SIGTERM for $grace s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
            for i in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$pidfile"
}
