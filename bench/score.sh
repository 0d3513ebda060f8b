#!/usr/bin/env bash
# `candela score` end to end, client and server sharing this machine, in one
# run: ROWS (default 5,000,000) demo retail rows (the held-out rows, tiled)
# written by pandas as Parquet (float64 features, a string id carried) and as
# CSV; per round, interleaved: Parquet → Parquet and CSV → CSV with
# `candela score` (default streams), and the server's own StreamPredict
# ceiling (`candela bench --call stream-predict --columnar`, 1,000-row
# messages, as `candela score` sends them, 1 and 2
# streams). Reports medians of the rounds, the ratios, and the peak RSS of
# the client (per run) and of the server (over the whole run).
# Usage: bench/score.sh      (ROUNDS=3 ROWS=5000000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
rows=${ROWS:-5000000}
target=${CARGO_TARGET_DIR:-$PWD/target}
out=$PWD/bench/out/score-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
cargo build --release -q -p candela-server -p candela-client --features candela-server/train
venv=$PWD/.tools/bench-score-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pandas, pyarrow' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q pandas==3.1.1 pyarrow==26.0.1
fi
"$target/release/candela-train" --segments retail --export-data "$out/data" >/dev/null
"$venv/bin/python" bench/score.py tables "$out" "$rows"
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -f "$out"/rows.* "$out"/scored.*' EXIT
port=${PORT:-50395}
"$target/release/candela-server" --listen "127.0.0.1:$port" --metrics-listen off --http-listen off --repository-poll-seconds 0 \
  --log-format json 2>"$out/server.log" &
pid=$!
until "$target/release/candela" --server "http://127.0.0.1:$port" health >/dev/null 2>&1; do sleep 0.1; done
"$venv/bin/python" bench/score.py measure "$out" "http://127.0.0.1:$port" "$rounds" "$target/release/candela" "$pid"
