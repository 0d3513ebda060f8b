#!/usr/bin/env bash
# Candela against the transport limit, in one run: the bare-tonic Open
# Inference Protocol server with no model (transport-baseline: what gRPC
# costs here), and the release server built from BEFORE (a commit) and from
# the working tree, each on its revision's demo models with default settings
# (metrics and HTTP off), all loaded in interleaved rounds (the order rotating
# each round) by `candela bench --call model-infer` (raw tensors, `retail`) at
# the points issue 30 sets targets for: one row at concurrency 1 (p50), 8
# (p99) and 32 (throughput), and 64 rows at concurrency 8. Prints each
# point's medians, each build against the limit.
#   bench/limit.sh BEFORE      (ROUNDS=3, SECONDS_PER_POINT=5; BEFORE_BINARY=an
#                              earlier run's out/before skips building BEFORE;
#                              AFTER_FLAGS=… are given to the working tree's server)
before=${1:?usage: bench/limit.sh BEFORE-commit}
rounds=${ROUNDS:-3}
seconds=${SECONDS_PER_POINT:-5}
source "$(dirname "$0")/common.sh" limit

build_before "$before"
build_release -p transport-baseline
cp "$target/release/candela-server" "$out/after"

declare -A ports=([limit]=50461 [before]=50462 [after]=50463)
"$target/release/transport-baseline" --listen "127.0.0.1:${ports[limit]}" 2>"$out/limit.log" &
pids+=($!)
for build in before after; do
  models=models
  [ "$build" = before ] && models=$worktree/models
  flags=()
  [ "$build" = after ] && read -r -a flags <<<"${AFTER_FLAGS:-}"
  "$out/$build" --listen "127.0.0.1:${ports[$build]}" --models "$models" --metrics-listen off --http-listen off \
    --log-format json "${flags[@]}" 2>"$out/$build.log" &
  pids+=($!)
done
load() { # <server> <args…>: one `candela bench` run against a server
  local server=$1
  shift
  "$target/release/candela" --server "http://127.0.0.1:${ports[$server]}" bench --call model-infer --model retail "$@"
}
for server in limit before after; do
  for _ in $(seq 300); do load "$server" --duration 0.1 --warmup 0 >/dev/null 2>&1 && continue 2; sleep 0.2; done
  echo "limit.sh: the $server server never answered; see $out/$server.log" >&2
  exit 1
done

points=("1 row, c1|--rows 1 --concurrency 1"
        "1 row, c8|--rows 1 --concurrency 8"
        "1 row, c32|--rows 1 --concurrency 32"
        "64 rows, c8|--rows 64 --concurrency 8")
servers=(limit before after)
for round in $(seq "$rounds"); do
  for index in "${!points[@]}"; do
    args=${points[$index]#*|}
    for turn in 0 1 2; do
      server=${servers[$(((turn + round) % 3))]}
      # shellcheck disable=SC2086
      load "$server" $args --duration "$seconds" --warmup 1 --json >"$out/$server-$index-$round.json"
    done
  done
  echo "limit.sh: round $round of $rounds done" >&2
done

python3 - "$out" "$rounds" "${points[@]}" <<'PY'
import json, statistics, sys
out, rounds, points = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
med = statistics.median
print("| point | limit rows/s | before ÷ limit | after ÷ limit | p50 µs limit / before / after | p99 µs limit / before / after |")
print("| --- | --- | --- | --- | --- | --- |")
for index, point in enumerate(points):
    name = point.split("|")[0]
    runs = {s: [json.load(open(f"{out}/{s}-{index}-{r}.json")) for r in range(1, rounds + 1)] for s in ("limit", "before", "after")}
    for s, rs in runs.items():
        assert all(r["errors"] == 0 for r in rs), (s, name, [r["error_samples"] for r in rs])
    rate = {s: med(r["rows_per_second"] for r in rs) for s, rs in runs.items()}
    p50 = {s: med(r["latency_us"]["p50"] for r in rs) for s, rs in runs.items()}
    p99 = {s: med(r["latency_us"]["p99"] for r in rs) for s, rs in runs.items()}
    print(f"| {name} | {rate['limit']:,.0f} | {rate['before'] / rate['limit']:.2f} | {rate['after'] / rate['limit']:.2f} "
          f"| {p50['limit']:.0f} / {p50['before']:.0f} / {p50['after']:.0f} | {p99['limit']:.0f} / {p99['before']:.0f} / {p99['after']:.0f} |")
PY
