#!/usr/bin/env bash
# Runs every Starling test: formatting, the Kubernetes manifests, unit and conformance tests (embedded backends,
# and real Redis and a real Kafka-protocol broker started here), and the end-to-end
# oracle tests against the real binaries, standalone and as separate processes.
#
# Installs what a fresh machine lacks (build packages for librdkafka, redis-server, nginx,
# prometheus for promtool, the noida-db broker, Mastodon.py, schemathesis and the rotel
# collector in cached venvs, masto.js with npm), starts Redis and
# the broker on free loopback ports for the duration of the run and stops them afterwards
# (the tests start their own nginx in front of the distributed stack).
#
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

need_packages=()
command -v pkg-config >/dev/null || need_packages+=(pkg-config)
[ -f /usr/include/zlib.h ] || need_packages+=(zlib1g-dev)
command -v redis-server >/dev/null || need_packages+=(redis-server)
command -v node >/dev/null || need_packages+=(nodejs npm)
# The reverse proxy in front of the distributed stack (scripts/lib/nginx.sh).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_packages+=(nginx)
# promtool (Debian's prometheus package): checks /metrics and the alerting rules.
command -v promtool >/dev/null || need_packages+=(prometheus)
if [ ${#need_packages[@]} -gt 0 ]; then
    step "installing ${need_packages[*]}"
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_packages[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_packages[@]}" >/dev/null; }
    else
        echo "missing ${need_packages[*]}; install them (apt-get install ${need_packages[*]})" >&2
        exit 1
    fi
fi

# The tests that need the servers started below are compiled as ignored unless this is
# set for the build (each such crate's build.rs): here they must run, and do.
export STARLING_TEST_SERVERS=1

step "formatting"
cargo fmt --all -- --check

step "Kubernetes manifests and Dockerfile (rendered, schema-validated, linted)"
scripts/check-k8s.sh

step "build (tests and binaries)"
cargo build --workspace --tests --locked

step "starting Redis and a Kafka-protocol broker on free loopback ports"
source scripts/lib/redis.sh
source scripts/lib/kafka.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/starling-test.XXXXXX")
cleanup() {
    kafka_stop "$run_dir/kafka" >/dev/null 2>&1 || true
    redis_stop "$run_dir/redis" >/dev/null 2>&1 || true
    redis_cluster_stop "$run_dir/redis-cluster" >/dev/null 2>&1 || true
    rm -rf "$run_dir"
}
trap cleanup EXIT
redis_port=$(free_port)
kafka_port=$(free_port)
redis_start "$redis_port" "$run_dir/redis"
redis_cluster_port=$(redis_cluster_free_port)
redis_cluster_start "$redis_cluster_port" "$run_dir/redis-cluster"
kafka_start "$kafka_port" "$run_dir/kafka"
export REDIS_URL="redis://127.0.0.1:$redis_port"
export REDIS_CLUSTER_URLS="redis://127.0.0.1:$redis_cluster_port,redis://127.0.0.1:$((redis_cluster_port + 1)),redis://127.0.0.1:$((redis_cluster_port + 2))"
export KAFKA_BROKERS="127.0.0.1:$kafka_port"
echo "Redis at $REDIS_URL, Redis Cluster at $REDIS_CLUSTER_URLS, broker at $KAFKA_BROKERS"

step "Mastodon client libraries, schemathesis and an OpenTelemetry collector"
source scripts/lib/clients.sh
MASTODON_PY=$(clients_python)
MASTO_JS=$(clients_masto_js)
SCHEMATHESIS=$(clients_schemathesis)
export MASTODON_PY MASTO_JS SCHEMATHESIS
echo "Mastodon.py $MASTODON_PY_VERSION at $MASTODON_PY, masto.js $MASTO_JS_VERSION at $MASTO_JS"
echo "schemathesis $SCHEMATHESIS_VERSION at $SCHEMATHESIS"
ROTEL=$(clients_rotel)
export ROTEL
echo "rotel $ROTEL_VERSION (an OpenTelemetry collector) at $ROTEL"
PROMTOOL=$(command -v promtool)
export PROMTOOL
echo "promtool at $PROMTOOL ($(promtool --version 2>&1 | head -1))"
# The same package's server, which tests/metrics.rs runs to scrape the distributed stack.
PROMETHEUS=$(command -v prometheus)
export PROMETHEUS

step "tests"
# End-to-end tests start real servers; two at a time keeps them inside 2 cores.
cargo test --workspace --locked --no-fail-fast "$@" -- --test-threads 2

step "all tests passed"
