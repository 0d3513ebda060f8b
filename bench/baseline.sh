#!/usr/bin/env bash
# The first baseline: builds the release binaries, starts candela-server on the
# demo models on 127.0.0.1, and runs client/examples/baseline.rs against it:
# 10,000 sequential single-row Predict calls (p50/p90/p99/p99.9), then
# 1000-row BatchPredict (sequential) and StreamPredict (pipelined) throughput.
# Usage: bench/baseline.sh [calls]   (PORT=… to move it off 50151)
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-10000}
port=${PORT:-50151}
cargo build --release -p candela-server -p candela-client --bins --examples
target/release/candela-server --listen "127.0.0.1:$port" --log-format json 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 100); do
  target/release/candela --server "http://127.0.0.1:$port" health >/dev/null 2>&1 && break
  sleep 0.1
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
target/release/examples/baseline "http://127.0.0.1:$port" "$calls"
