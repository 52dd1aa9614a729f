#!/usr/bin/env bash
# Runs every Starling test: formatting, unit and conformance tests, and the end-to-end
# oracle tests against the real standalone binary.
#
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "formatting"
cargo fmt --all -- --check

step "build (tests and binaries)"
cargo build --workspace --tests --locked

step "tests"
# The oracle tests start real servers; two at a time keeps them inside 2 cores.
cargo test --workspace --locked "$@" -- --test-threads 2

step "all tests passed"
