#!/usr/bin/env bash
# Tree scoring speed against the libraries' own predict, in one run: the
# demo's LightGBM model (models/retail-gbt) and an XGBoost model trained here
# on the same retail rows (200 trees, depth 6), both libraries' regressors on
# them, scored on retail's 10,000 held-out rows; and both libraries'
# categorical forests on a synthetic DataFrame (bench/trees.py `categorical`). Per round, interleaved: the library's C++ predict
# (LightGBM `Booster.predict`, XGBoost `inplace_predict`) and Candela's
# evaluator alone (server/benches/scorer.rs), each on 1 and on 2 threads, at
# 1 and 1,000 rows per call; then through gRPC (`candela bench`, Predict and
# BatchPredict of 1,000 rows, one caller). Prints medians of the rounds and
# the ratios Candela / library.
# Usage: bench/trees.sh      (ROUNDS=5 SECONDS_PER_RUN=2 by default)
rounds=${ROUNDS:-5}
seconds=${SECONDS_PER_RUN:-2}
source "$(dirname "$0")/common.sh" trees
source "$(dirname "$0")/forests.sh"
port=${PORT:-50391}
serve server.log --listen "127.0.0.1:$port" --models "$out/repo" --metrics-listen off --http-listen off \
  --repository-poll-seconds 0
wait_healthy "http://127.0.0.1:$port"
"$python" bench/trees.py measure "$out" "http://127.0.0.1:$port" "$rounds" "$seconds" "$target/release/candela"
