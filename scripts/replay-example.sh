#!/usr/bin/env bash
# Makes the example replay report in shared/replay/example/ from nothing: builds Starling,
# starts a standalone server on a free loopback port with a fresh data directory,
# generates the example trace, replays it in real time (about 1.5 minutes), and stops
# the server. Re-run it after changing the replay tool or the services; the trace is
# seeded, so only the measurements change.
#
#   scripts/replay-example.sh [OUT]   (default shared/replay/example)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/shared/replay/example}"
work="$(mktemp -d)"
server=""
cleanup() {
    [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked -p starling
bin="$root/target/release/starling"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

# A celebrity line the example's five celebrities (about 1,000 followers each) cross, and
# no write rate limit: a trace's heavy posters post faster than a person would.
admin_token="example-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
STARLING__ADMIN__TOKEN="$admin_token" STARLING__RATE_LIMIT__WRITES_PER_SECOND=0 \
STARLING__CELEBRITY__THRESHOLD=500 STARLING__CELEBRITY__DEMOTE_BELOW=400 \
RUST_LOG=warn "$bin" up --data-dir "$work/data" --bind "127.0.0.1:$port" >"$work/server.out" 2>"$work/server.log" &
server=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$work/server.out" 2>/dev/null && break
    sleep 0.1
done
grep -q "listening on" "$work/server.out" || { cat "$work/server.log" >&2; exit 1; }

"$bin" trace generate --users 5000 --mean-following 40 --celebrities 5 --seed 1 --out "$work/example.trace"
"$bin" trace stats "$work/example.trace"
STARLING_ADMIN_TOKEN="$admin_token" "$bin" trace replay "$work/example.trace" --target "http://127.0.0.1:$port" --out "$out" --run-id ex1 --seed 1
