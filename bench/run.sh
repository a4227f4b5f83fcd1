#!/usr/bin/env bash
# Builds the hub and the load tool in release mode and runs every scenario, appending the
# results to bench/BENCHMARKS.md. Extra arguments go to crier-bench (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -p crier -p crier-bench
exec target/release/crier-bench --crier-bin target/release/crier --out bench/BENCHMARKS.md "$@"
