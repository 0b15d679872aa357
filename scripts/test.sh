#!/usr/bin/env bash
# The project's test command: builds the images the tests need (offline, from Debian
# packages), then runs every test of the workspace against the real Docker engine.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
t0=$(date +%s)

step "task images"
deploy/images/build.sh

step "cargo test --workspace"
# Integration tests start clusters of real processes; running test binaries one after
# another keeps a 2-core machine from starving Raft heartbeats into spurious elections.
cargo test --workspace --locked "$@" -- --test-threads 2

printf '\n== tests passed in %ss\n' "$(( $(date +%s) - t0 ))"
