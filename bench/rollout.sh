#!/usr/bin/env bash
# The cost of release safety on the request path, from one run of the release
# server over four segments serving the same demo model: `bare` (no training
# statistics, no policy), `drift` (the demo model.json's statistics: drift
# counted in every pass), `routed` (drift + a rollout policy with a 10 %
# canary of an identical copy, so every call is drawn by hash) and `shadowed`
# (drift + a 100 % shadow: every row scored again by another model after the
# caller's answer). `candela bench` loads each in turn, interleaved, ROUNDS
# times, for Predict at concurrency 8 and BatchPredict of 64 rows at
# concurrency 8; reports medians of the rounds and the same-run ratios to
# `bare` (throughput, p50, p99), and what the shadow scored and dropped.
# Usage: bench/rollout.sh      (ROUNDS=5 SECONDS_PER_RUN=5 by default)
rounds=${ROUNDS:-5}
seconds=${SECONDS_PER_RUN:-5}
source "$(dirname "$0")/common.sh" rollout
build_release
repo=$(mktemp -d)
at_exit 'rm -rf "$repo"'
copy() { mkdir -p "$repo/$3/$4" && cp "models/$1/1/model.safetensors" "models/$1/1/model.json" "$repo/$3/$4/"; }
copy retail 1 bare 1
python3 -c 'import json,sys; p=sys.argv[1]; m=json.load(open(p)); m.pop("monitoring"); json.dump(m, open(p, "w"))' \
  "$repo/bare/1/model.json"
copy retail 1 drift 1
copy retail 1 routed 1
copy retail 1 routed 2
echo '{"stable": 1, "canary": {"version": 2, "percent": 10}}' >"$repo/routed/rollout.json"
copy retail 1 shadowed 1
copy sme 1 shadowed 5
echo '{"stable": 1, "shadow": {"version": 5, "percent": 100}}' >"$repo/shadowed/rollout.json"
admin=$repo/admin-keys
echo "bench-admin-key" >"$admin"
port=${PORT:-50381}
url=http://127.0.0.1:$port
serve server.log --listen "127.0.0.1:$port" --models "$repo" --metrics-listen off --http-listen off \
  --repository-poll-seconds 0 --admin-keys-file "$admin"
wait_healthy "$url"

for round in $(seq "$rounds"); do
  for load in predict batch64; do
    for segment in bare drift routed shadowed; do
      case $load in
        predict) args=(--call predict) ;;
        batch64) args=(--call batch-predict --rows 64) ;;
      esac
      "$target/release/candela" --server "$url" bench "${args[@]}" --model "$segment" --concurrency 8 \
        --duration "$seconds" --warmup 1 --json >"$out/$load-$segment-$round.json"
    done
  done
done
sleep 2 # the shadow's queue drains
"$target/release/candela" --server "$url" --admin-key bench-admin-key rollout status --segment shadowed \
  >"$out/shadow-status.txt"

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def runs(load, segment):
    return [json.load(open(f"{out}/{load}-{segment}-{r}.json")) for r in range(1, rounds + 1)]
print("| load | segment | rows/s | p50 µs | p99 µs | errors | rows/s vs bare | p50 vs bare | p99 vs bare |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for load in ("predict", "batch64"):
    base = {}
    for segment in ("bare", "drift", "routed", "shadowed"):
        rs = runs(load, segment)
        rate = statistics.median(r["rows_per_second"] for r in rs)
        p50 = statistics.median(r["latency_us"]["p50"] for r in rs)
        p99 = statistics.median(r["latency_us"]["p99"] for r in rs)
        errors = sum(r["errors"] for r in rs)
        base.setdefault("v", (rate, p50, p99))
        b = base["v"]
        print(f"| {load} c8 | {segment} | {rate:,.0f} | {p50:.0f} | {p99:.0f} | {errors} | "
              f"{rate / b[0]:.3f} | {p50 / b[1]:.3f} | {p99 / b[2]:.3f} |")
print()
print(open(f"{out}/shadow-status.txt").read())
PY
