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
rounds=${ROUNDS:-3}
rows=${ROWS:-5000000}
source "$(dirname "$0")/common.sh" score
build_release --features candela-server/train
python=$(bench_venv bench-score-venv "pandas, pyarrow" pandas==3.1.1 pyarrow==26.0.1)
"$target/release/candela-train" --segments retail --export-data "$out/data" >/dev/null
"$python" bench/score.py tables "$out" "$rows"
at_exit 'rm -f "$out"/rows.* "$out"/scored.*'
port=${PORT:-50395}
serve server.log --listen "127.0.0.1:$port" --metrics-listen off --http-listen off --repository-poll-seconds 0
wait_healthy "http://127.0.0.1:$port"
"$python" bench/score.py measure "$out" "http://127.0.0.1:$port" "$rounds" "$target/release/candela" "$pid"
