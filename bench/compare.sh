#!/usr/bin/env bash
# Candela against an earlier Candela, end to end: the release server built
# from BEFORE (a commit) and from the working tree, both on the demo models
# with the default settings (metrics off), loaded in alternating rounds by the
# working tree's `candela bench` (Predict at concurrency 1 and 32, BatchPredict
# of 64 rows at concurrency 8, StreamPredict of 1000-row messages on one
# stream), so both see the same machine; medians of ROUNDS (default 3) and the
# ratio after / before. Prints a Markdown table.
# Usage: bench/compare.sh BEFORE      (SECONDS_PER_POINT=5 by default)
before=${1:?usage: bench/compare.sh BEFORE-commit}
rounds=${ROUNDS:-3}
seconds=${SECONDS_PER_POINT:-5}
source "$(dirname "$0")/common.sh" compare

build_before "$before"
build_release
cp "$target/release/candela-server" "$out/after"

port=50361
for build in before after; do
  # Each build serves its own revision's demo models (the same weights; model.json may gain fields).
  models=models
  [ "$build" = before ] && models=$worktree/models
  "$out/$build" --listen "127.0.0.1:$port" --models "$models" --metrics-listen off --http-listen off --log-format json 2>"$out/$build.log" &
  pids+=($!)
  eval "port_$build=$port"
  port=$((port + 1))
done
for build in before after; do
  p=port_$build
  for _ in $(seq 600); do
    "$target/release/candela" --server "http://127.0.0.1:${!p}" health >/dev/null 2>&1 && continue 2
    sleep 0.2
  done
  echo "compare: the $build server never became SERVING; see $out/$build.log" >&2
  exit 1
done

points=("predict c1|--call predict --concurrency 1"
        "predict c32|--call predict --concurrency 32"
        "batch-predict 64 rows c8|--call batch-predict --rows 64 --concurrency 8"
        "stream-predict 1000 rows, 1 stream|--call stream-predict --rows 1000 --concurrency 1")
for round in $(seq "$rounds"); do
  for index in "${!points[@]}"; do
    args=${points[$index]#*|}
    for build in before after; do
      p=port_$build
      # shellcheck disable=SC2086
      "$target/release/candela" --server "http://127.0.0.1:${!p}" bench $args --duration "$seconds" --warmup 1 --json \
        >"$out/$build-$index-$round.json"
    done
  done
done

python3 - "$out" "$rounds" "${points[@]}" <<'PY'
import json, statistics, sys
out, rounds, points = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(build, index, r):
    return json.load(open(f"{out}/{build}-{index}-{r}.json"))
print("| point | before: rows/s | after: rows/s | ratio | before: p50 µs | after: p50 µs |")
print("| --- | --- | --- | --- | --- | --- |")
for index, point in enumerate(points):
    name = point.split("|")[0]
    row = {}
    for build in ("before", "after"):
        runs = [load(build, index, r) for r in range(1, rounds + 1)]
        row[build] = (statistics.median(x["rows_per_second"] for x in runs),
                      statistics.median(x["latency_us"]["p50"] for x in runs))
    (bt, bp), (at, ap) = row["before"], row["after"]
    print(f"| {name} | {bt:,.0f} | {at:,.0f} | {at / bt:.3f} | {bp:.0f} | {ap:.0f} |")
PY
