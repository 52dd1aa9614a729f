#!/usr/bin/env bash
# The fan-out-on-read SQL baseline of DESIGN.md's read target: a home timeline computed at
# read time by one PostgreSQL query (the newest 20 posts of the people the reader follows
# and the reader's own, with the author's handle), driven by pgbench with the read bench's
# 32 connections, on a private PostgreSQL cluster on a free loopback port.
#
#   scripts/sql-baseline.sh [small|large|all] [seconds]     # default: all 15
#
# small: the read bench's data (services/starling/benches/read.rs): 200 readers, 50
#        ordinary authors and 5 celebrities, 20 posts per author; reader i follows the
#        ordinary authors a with (a + i) even and every celebrity. Compare with
#        `cargo bench -p starling --bench read` run the same hour.
# large: the scale of DESIGN.md's PostgreSQL peer: 100,000 users following 49 others
#        each (4.9M follows, uniformly random), 20 posts each (2M posts).
#
# Prints a Markdown table; p50/p99 come from pgbench's per-transaction log.
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-all}"
seconds="${2:-15}"
case "$scale" in small|large|all) ;; *) echo "usage: $0 [small|large|all] [seconds]" >&2; exit 2 ;; esac

source scripts/lib/postgres.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/starling-sql.XXXXXX")
chmod 755 "$run_dir"
cleanup() { pg_stop "$run_dir/pg" || true; rm -rf "$run_dir"; }
trap cleanup EXIT
port=$(free_port)
echo "==> starting PostgreSQL on 127.0.0.1:$port" >&2
pg_start "$port" "$run_dir/pg"
sql() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U starling starling "$@"; }

schema() {
    sql <<'SQL'
SET client_min_messages TO warning;
DROP TABLE IF EXISTS posts, follows, users;
CREATE TABLE users (id bigint PRIMARY KEY, handle text NOT NULL);
CREATE TABLE follows (follower_id bigint NOT NULL, followee_id bigint NOT NULL,
                      PRIMARY KEY (follower_id, followee_id));
CREATE TABLE posts (id bigint PRIMARY KEY, author_id bigint NOT NULL, text text NOT NULL);
SQL
}

indexes() {
    sql <<'SQL'
CREATE INDEX posts_by_author ON posts (author_id, id DESC);
VACUUM ANALYZE;
SQL
}

load_small() {
    # Users 1..55 are authors (51..55 the celebrities), 56..255 the readers.
    sql <<'SQL'
INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 255) g;
INSERT INTO follows
  SELECT r, a FROM generate_series(0, 199) i, generate_series(0, 49) a0,
       LATERAL (SELECT 56 + i AS r, a0 + 1 AS a) x
  WHERE (a0 + i) % 2 = 0;
INSERT INTO follows SELECT 56 + i, c FROM generate_series(0, 199) i, generate_series(51, 55) c;
-- Post ids grow with time, and authors post in turn, as the read bench does.
INSERT INTO posts SELECT p * 55 + a, a, 'post ' || p || ' from author ' || a
  FROM generate_series(0, 19) p, generate_series(1, 55) a;
SQL
}

load_large() {
    sql <<'SQL'
INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 100000) g;
INSERT INTO follows
  SELECT DISTINCT u, 1 + floor(random() * 100000)::bigint
  FROM generate_series(1, 100000) u, generate_series(1, 49) k
  ON CONFLICT DO NOTHING;
INSERT INTO posts SELECT p * 100000 + u, u, 'post ' || p || ' from user ' || u
  FROM generate_series(0, 19) p, generate_series(1, 100000) u;
SQL
}

# run <label> <first reader> <last reader>
run() {
    local label=$1 lo=$2 hi=$3
    cat >"$run_dir/home.sql" <<SQL
\\set r random($lo, $hi)
SELECT p.id, p.author_id, u.handle, p.text
  FROM posts p JOIN users u ON u.id = p.author_id
 WHERE p.author_id IN (SELECT followee_id FROM follows WHERE follower_id = :r UNION ALL SELECT :r)
 ORDER BY p.id DESC LIMIT 20;
SQL
    local counts
    counts=$(sql -At -c "SELECT (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM follows) || ' follows, ' || (SELECT count(*) FROM posts) || ' posts'")
    echo "==> $label: $counts; pgbench, 32 connections, $seconds s" >&2
    rm -f "$run_dir"/pgbench_log.*
    (cd "$run_dir" && pgbench -n -h 127.0.0.1 -p "$port" -U starling -c 32 -j 2 -T "$seconds" -M prepared \
        -P 5 -l -f home.sql starling >"$run_dir/pgbench.out" 2>"$run_dir/pgbench.err") \
        || { cat "$run_dir/pgbench.err" >&2; return 1; }
    grep -E "progress" "$run_dir/pgbench.err" >&2 || true
    local tps p50 p99
    tps=$(awk '/^tps = / {printf "%.0f", $3}' "$run_dir/pgbench.out")
    read -r p50 p99 < <(cat "$run_dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '
        { v[NR] = $1 } END { printf "%.2f %.2f\n", v[int(NR * 0.50)] / 1000, v[int(NR * 0.99)] / 1000 }')
    echo "| $label | $counts | $tps | $p50 | $p99 |"
}

echo "| data | size | reads/s | p50 ms | p99 ms |"
echo "|---|---|---:|---:|---:|"
if [ "$scale" != large ]; then
    echo "==> loading the small data set" >&2
    schema; load_small; indexes
    run "small (the read bench's)" 56 255
fi
if [ "$scale" != small ]; then
    echo "==> loading the large data set (about a minute)" >&2
    schema; load_large; indexes
    run "large (100k users)" 1 100000
fi
