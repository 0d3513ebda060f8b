#!/usr/bin/env bash
# The cost of production settings on single-row Predict: two servers in one run,
# one bare (no API keys, metrics off) and one as production runs it (API keys
# and Prometheus metrics on; info-level logs in both), measured alternately
# (bare, production, bare, production) with client/examples/baseline.rs.
# Usage: bench/overhead.sh [calls]
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-10000}
cargo build --release -p candela-server -p candela-client --bins --examples
work=$(mktemp -d)
key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$key" > "$work/keys"
target/release/candela-server --listen 127.0.0.1:50161 --metrics-listen off 2>/dev/null &
bare=$!
target/release/candela-server --listen 127.0.0.1:50162 --metrics-listen 127.0.0.1:50163 --api-keys-file "$work/keys" 2>/dev/null &
production=$!
trap 'kill $bare $production 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for port in 50161 50162; do
  for _ in $(seq 100); do
    target/release/candela --server "http://127.0.0.1:$port" health >/dev/null 2>&1 && break
    sleep 0.1
  done
done
for round in 1 2; do
  echo "round $round, bare:";       target/release/examples/baseline http://127.0.0.1:50161 "$calls" | grep '^Predict'
  echo "round $round, production:"; CANDELA_API_KEY=$key target/release/examples/baseline http://127.0.0.1:50162 "$calls" | grep '^Predict'
done
