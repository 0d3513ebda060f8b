#!/usr/bin/env bash
# The live repository under load, with the release server on a copy of the demo
# models (polling every 0.1 s): Predict at concurrency 4 from `candela bench`,
# first in steady state, then while a new version of `retail` is published and
# removed once a second. Reports, from one run: p50/p99 and errors in both
# phases (their ratio), the time from publishing a version (model.json
# written) to the first answer it gives (median of ROUNDS), and the server's
# resident memory in steady state and at its peak during the swaps.
# Usage: bench/live-reload.sh      (ROUNDS=5 SECONDS_PER_PHASE=10 by default)
rounds=${ROUNDS:-5}
seconds=${SECONDS_PER_PHASE:-10}
source "$(dirname "$0")/common.sh" live-reload
build_release
repo=$(mktemp -d)
at_exit 'rm -rf "$repo"'
cp -r models/retail "$repo/retail"
port=${PORT:-50371}
url=http://127.0.0.1:$port
serve server.log --listen "127.0.0.1:$port" --models "$repo" --metrics-listen off --http-listen off \
  --repository-poll-seconds 0.1
wait_healthy "$url"
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
publish() { # <version>: the weights first, model.json last
  mkdir -p "$repo/retail/$1"
  cp models/retail/1/model.safetensors "$repo/retail/$1/"
  cp models/retail/1/model.json "$repo/retail/$1/.model.json" && mv "$repo/retail/$1/.model.json" "$repo/retail/$1/model.json"
}
now_ms() { date +%s%3N; }

bench() { # <name>
  "$target/release/candela" --server "$url" bench --call predict --concurrency 4 --duration "$seconds" --warmup 1 \
    --json >"$out/$1.json"
}
bench steady
steady_rss=$(rss)

# Swaps under load: a version published, then removed, every second.
bench swapping &
bench_pid=$!
peak_rss=$steady_rss
version=100
end=$((SECONDS + seconds + 1))
while [ $SECONDS -lt $end ]; do
  publish $version
  for _ in $(seq 10); do sleep 0.05; r=$(rss); [ "$r" -gt "$peak_rss" ] && peak_rss=$r; done
  rm -rf "$repo/retail/$version"
  for _ in $(seq 10); do sleep 0.05; r=$(rss); [ "$r" -gt "$peak_rss" ] && peak_rss=$r; done
  version=$((version + 1))
done
wait "$bench_pid"

# Publish to first answer.
: >"$out/publish-ms.txt"
for round in $(seq "$rounds"); do
  v=$((500 + round))
  start=$(now_ms)
  publish $v
  until "$target/release/candela" --server "$url" predict --segment retail \
    --features "$(python3 -c 'print(",".join(["0.5"] * 30))')" 2>/dev/null | grep -q "retail v$v "; do :; done
  echo $(($(now_ms) - start)) >>"$out/publish-ms.txt"
  rm -rf "$repo/retail/$v"
  sleep 0.5
done

python3 - "$out" "$steady_rss" "$peak_rss" <<'PY'
import json, statistics, sys
out, steady_rss, peak_rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steady, swapping = (json.load(open(f"{out}/{n}.json")) for n in ("steady", "swapping"))
publish = [int(x) for x in open(f"{out}/publish-ms.txt").read().split()]
print("| phase | calls/s | p50 µs | p99 µs | errors |")
print("| --- | --- | --- | --- | --- |")
for name, r in (("steady", steady), ("versions published and removed every second", swapping)):
    print(f"| {name} | {r['rows_per_second']:,.0f} | {r['latency_us']['p50']:.0f} | {r['latency_us']['p99']:.0f} | {r['errors']} |")
print(f"\nratio swapping/steady: p50 {swapping['latency_us']['p50'] / steady['latency_us']['p50']:.2f}, "
      f"p99 {swapping['latency_us']['p99'] / steady['latency_us']['p99']:.2f}")
print(f"publish (model.json written) to first answer: median {statistics.median(publish)} ms "
      f"over {len(publish)} versions ({publish}); the poll period is 100 ms")
print(f"resident memory: {steady_rss / 1024:.1f} MiB steady, {peak_rss / 1024:.1f} MiB at the peak of the swaps")
PY
