#!/usr/bin/env bash
# What explanations cost, in one run. Trees: the libraries' own TreeSHAP
# (XGBoost pred_contribs, LightGBM pred_contrib) against Candela's, alone, on
# the forests bench/trees.py trains (the demo's LightGBM model, an XGBoost
# model of 200 trees of depth 6, both libraries' categorical forests),
# 1,000 rows per call, 1 and 2 threads. Networks: the demo's three
# 30-feature MLPs through gRPC, Predict with and without `explain`, and
# BatchPredict of 10 explained rows. Prints medians (bench/explain.py).
# Usage: bench/explain.sh      (ROUNDS=5 SECONDS_PER_RUN=2 by default)
rounds=${ROUNDS:-5}
seconds=${SECONDS_PER_RUN:-2}
source "$(dirname "$0")/common.sh" explain
source "$(dirname "$0")/forests.sh"
port=${PORT:-50393}
serve server.log --listen "127.0.0.1:$port" --models models --metrics-listen off --http-listen off \
  --repository-poll-seconds 0
wait_healthy "http://127.0.0.1:$port"
"$python" bench/explain.py measure "$out" "http://127.0.0.1:$port" "$rounds" "$seconds" "$target/release/candela"
