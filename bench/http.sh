#!/usr/bin/env bash
# The HTTP/JSON API beside gRPC, in one run, by one load generator
# (`candela bench`), against one release server on this machine: the Open
# Inference Protocol's infer over gRPC (raw tensors), over HTTP with binary
# tensor data, over HTTP with JSON tensors, and POST /score (JSON rows), each
# at 1 and 64 rows per request, closed loop at concurrency 8 over 8 connections
# (HTTP/1.1 carries one request per connection at a time; gRPC gets as many
# HTTP/2 connections, so neither is held back by a shared one). Rounds are
# interleaved (every call once per round); reports the median of the rounds
# of requests/s, rows/s and p50/p99 latency, each one's ratio to gRPC, and
# the server's own CPU time per request (from /proc/PID/stat around each run,
# warm-up included, divided by the requests of the whole run at the measured
# rate): the load generator shares the machine, and its cost differs by
# protocol, so throughput alone mixes the client's cost with the server's.
# Usage: bench/http.sh      (ROUNDS=3 SECONDS_PER_RUN=5 by default)
rounds=${ROUNDS:-3}
seconds=${SECONDS_PER_RUN:-5}
source "$(dirname "$0")/common.sh" http
build_release
port=${PORT:-50396}
http=${HTTP_PORT:-18096}
serve server.log --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http" --metrics-listen off \
  --repository-poll-seconds 0
wait_healthy "http://127.0.0.1:$port"
for round in $(seq "$rounds"); do
  for rows in 1 64; do
    for call in model-infer http-infer-binary http-infer-json http-score; do
      read -r -a before < <(cut -d' ' -f14,15 "/proc/$pid/stat")
      "$target/release/candela" --server "http://127.0.0.1:$port" bench --call "$call" --http-url "http://127.0.0.1:$http" \
        --rows "$rows" --concurrency 8 --connections 8 --duration "$seconds" --warmup 1 --json >"$out/$call-$rows-$round.json"
      read -r -a after < <(cut -d' ' -f14,15 "/proc/$pid/stat")
      echo $(((after[0] + after[1] - before[0] - before[1]))) >"$out/$call-$rows-$round.ticks"
    done
  done
  echo "bench/http.sh: round $round of $rounds done" >&2
done
python3 - "$out" "$(getconf CLK_TCK)" "$seconds" <<'PY'
import glob, json, statistics, sys
out, tick, seconds = sys.argv[1], 1 / int(sys.argv[2]), float(sys.argv[3])
runs = {}
for path in glob.glob(f"{out}/*.json"):
    s = json.load(open(path))
    assert s["errors"] == 0, (path, s["error_samples"])
    ticks = int(open(path[:-5] + ".ticks").read())
    s["server_cpu_us"] = ticks * tick * 1e6 / (s["requests_per_second"] * (seconds + 1))
    runs.setdefault((s["call"], s["rows_per_request"]), []).append(s)
med = lambda xs: statistics.median(xs)
print(f"{'call':<20} {'rows':>4} {'req/s':>9} {'rows/s':>10} {'p50 us':>8} {'p99 us':>8} {'÷ gRPC':>7} {'server CPU us/req':>18}"
      f"   (medians of {len(next(iter(runs.values())))} rounds)")
for rows in (1, 64):
    base = med([s["rows_per_second"] for s in runs[("model-infer", rows)]])
    for call in ("model-infer", "http-infer-binary", "http-infer-json", "http-score"):
        r = runs[(call, rows)]
        rps = med([s["rows_per_second"] for s in r])
        print(f"{call:<20} {rows:>4} {med([s['requests_per_second'] for s in r]):>9.0f} {rps:>10.0f} "
              f"{med([s['latency_us']['p50'] for s in r]):>8.0f} {med([s['latency_us']['p99'] for s in r]):>8.0f} {rps / base:>7.2f} "
              f"{med([s['server_cpu_us'] for s in r]):>18.1f}")
PY
