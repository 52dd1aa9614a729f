#!/usr/bin/env bash
# Makes the example what-if study in shared/replay/example-study/ from nothing: builds
# Starling, imports a bounded sample of the real SNAP Higgs trace (the first 20,000
# activity events and the follower graph among their users, gaps filled with follows
# derived from the interactions, three reads by followers per post), and replays it
# under push-all, the hybrid at three celebrity lines and pull-all, each on a fresh
# standalone server that `starling trace study` starts itself (about 10 minutes).
#
#   scripts/study-example.sh [OUT]   (default shared/replay/example-study)
#
# The Higgs files come from the shared data directory next to the repository
# (../shared/data, see its README), or from STARLING_SHARED_DATA.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/shared/replay/example-study}"
data="${STARLING_SHARED_DATA:-$root/../shared/data}"
activity="$data/higgs-activity-2012-07-01_03.txt"
graph="$data/higgs-social_network.prefix.edgelist"
for f in "$activity" "$graph"; do
    [ -r "$f" ] || { echo "study-example: $f not found (set STARLING_SHARED_DATA to the directory holding the Higgs files)" >&2; exit 2; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release --locked -p starling
bin="$root/target/release/starling"

"$bin" trace import-higgs --activity "$activity" --graph "$graph" --users active --fill interactions \
    --max-events 20000 --reads-per-post 3 --seed 1 --out "$work/higgs.trace"
"$bin" trace stats "$work/higgs.trace" | tee "$work/stats.txt"

# The three days' first 20,000 posts (and the reads) at a fixed 400 events/s (real time
# would take days); the lines sit around the sample's follower counts (p99 20, max
# 1,065). The replays' own reports, the plots and study.md go to $out.
rm -rf "$out/push-all" "$out/pull-all" "$out"/hybrid-*
"$bin" trace study "$work/higgs.trace" --configs push-all,hybrid:1000,hybrid:100,hybrid:10,pull-all \
    --rate 400 --lag-sample 0.05 --seed 1 --out "$out"
cp "$work/stats.txt" "$out/trace-stats.txt"
# The servers ran at RUST_LOG=warn: an empty log says nothing went wrong, and is left out.
find "$out" -name server.log -empty -delete
