#!/usr/bin/env bash
# How much of crier's distance to raw in `perf-compare` is the load tool's own cost.
#
# fanout-bench finds its two markers (`bench_ts`, `bench_seq`) in each message by comparing a
# window at every byte from the start. raw's messages are the 50-byte payload itself; a crier
# event is about 300 bytes with the payload in `data`, near its end (the event's shape is
# API.md §1), so the search costs the load tool about 0.4 µs per crier delivery against 0.08
# for raw's. On a machine whose cores the hub shares with the load tool, that is CPU the hub
# does not get: 0.15 of a core at 5k × 100, 0.3 at 5k × 200.
#
# This builds a copy of the shared fanout-bench whose only change is that search (memchr's
# `memmem`, whose cost hardly depends on where the marker is) and runs the shared
# perf-compare with it. The shared folder is read, never written.
#
# Usage: bench/marker-search.sh [path/to/crier]   (SCENARIOS, ONLY and OUT_DIR as perf-compare)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
shared=${SHARED_BENCH:-$here/../../shared/bench}
crier=$(readlink -f "${1:-target/release/crier}")
work=${MARKER_BENCH_TARGET:-$HOME/.cache/crier-bench-tools-memmem}
src=$work/fanout-bench-src
search='s.windows(key.len()).position(|w| w == key)?'

rm -rf "$src"
mkdir -p "$work"
cp -r "$shared/fanout-bench" "$src"
grep -qF "$search" "$src/src/main.rs" || {
  echo "the shared fanout-bench no longer searches its markers as this script expects" >&2
  exit 2
}
sed -i "s/s\.windows(key\.len())\.position(|w| w == key)?/memchr::memmem::find(s, key)?/" "$src/src/main.rs"
grep -q '^memchr *=' "$src/Cargo.toml" ||
  sed -i 's/^\[dependencies\]$/[dependencies]\nmemchr = "2"/' "$src/Cargo.toml"
(cd "$src" && CARGO_TARGET_DIR="$work/fanout-bench" cargo build --release -q)
# raw-fanout is built unchanged from the shared folder by perf-compare itself.
BENCH_TARGET=$work exec "$shared/perf-compare" "$crier"
