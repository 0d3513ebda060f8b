#!/usr/bin/env bash
# Tree scoring speed against the libraries' own predict, in one run: the
# demo's LightGBM model (models/retail-gbt) and an XGBoost model trained here
# on the same retail rows (200 trees, depth 6), scored on retail's 10,000
# held-out rows. Per round, interleaved: the library's C++ predict
# (LightGBM `Booster.predict`, XGBoost `inplace_predict`) and Candela's
# evaluator alone (server/benches/scorer.rs), each on 1 and on 2 threads, at
# 1 and 1,000 rows per call; then through gRPC (`candela bench`, Predict and
# BatchPredict of 1,000 rows, one caller). Prints medians of the rounds and
# the ratios Candela / library.
# Usage: bench/trees.sh      (ROUNDS=5 SECONDS_PER_RUN=2 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
seconds=${SECONDS_PER_RUN:-2}
target=${CARGO_TARGET_DIR:-$PWD/target}
out=$PWD/bench/out/trees-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
cargo build --release -q -p candela-server -p candela-client --features candela-server/train
cargo bench -q -p candela-server --bench scorer --no-run 2>/dev/null
venv=$PWD/.tools/bench-trees-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import xgboost, lightgbm' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q xgboost-cpu==3.2.0 lightgbm==4.7.0 numpy
fi
"$target/release/candela-train" --segments retail --export-data "$out/data" >/dev/null
"$venv/bin/python" bench/trees.py train "$out"
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null' EXIT
port=${PORT:-50391}
"$target/release/candela-server" --listen "127.0.0.1:$port" --models "$out/repo" --metrics-listen off --http-listen off \
  --repository-poll-seconds 0 --log-format json 2>"$out/server.log" &
pid=$!
until "$target/release/candela" --server "http://127.0.0.1:$port" health >/dev/null 2>&1; do sleep 0.1; done
"$venv/bin/python" bench/trees.py measure "$out" "http://127.0.0.1:$port" "$rounds" "$seconds" "$target/release/candela"
