#!/usr/bin/env bash
# The whole benchmark comparison in one go, on this machine, all on 127.0.0.1:
#   servers     transport-baseline (gRPC with no model: the physical limit),
#               Candela bare (no keys, metrics off), Candela production (API keys,
#               Prometheus metrics), Seldon MLServer + scikit-learn MLP of the same shape
#   generators  Triton's perf_analyzer and `candela bench`, both over the Open
#               Inference Protocol (ModelInfer, FP32 raw contents)
#   points      batch 1 and 64 × concurrency 1, 8, 32; each ≥ 5 s after warm-up,
#               repeated REPEATS times (default 3); medians reported
#   also        StreamPredict rows/s with 1000-row messages (1 and 2 streams), the criterion
#               forward-pass benchmarks, the production server's peak RSS
# Raw results go to bench/out/<timestamp>/; the report is appended to bench/RESULTS.md.
# Usage: bench/run.sh            (REPEATS=1 SECONDS_PER_POINT=5 to shorten)
repeats=${REPEATS:-3}
seconds=${SECONDS_PER_POINT:-6}
source "$(dirname "$0")/common.sh" run
say() { echo "bench: $*" >&2; }

cargo build --release -p candela-server -p candela-cli -p transport-baseline
scripts/install-test-tools
mlserver_models=$(bench/mlserver/setup.sh)
tools=$(cd "${CANDELA_TOOLS:-.tools}" && pwd)
bin=target/release

key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$key" > "$out/keys"
at_exit 'rm -f "$out/keys"'

$bin/transport-baseline --listen 127.0.0.1:50261 2>"$out/baseline.log" &
pids+=($!)
$bin/candela-server --listen 127.0.0.1:50262 --metrics-listen off --http-listen off --log-format json 2>"$out/bare.log" &
pids+=($!)
$bin/candela-server --listen 127.0.0.1:50263 --metrics-listen 127.0.0.1:50264 --api-keys-file "$out/keys" \
  --log-format json 2>"$out/production.log" &
production=$!
pids+=($production)
# parallel_workers 0: inference in the server process. MLServer 1.7.1's worker pool
# fails to start under Python 3.11 here ("There is no current event loop").
cat > "$out/mlserver-settings.json" <<JSON
{"host": "127.0.0.1", "http_port": 50265, "grpc_port": 50266, "metrics_port": 50267, "parallel_workers": 0}
JSON
cp "$out/mlserver-settings.json" "$mlserver_models/settings.json"
(cd "$mlserver_models" && exec "$tools/mlserver/bin/mlserver" start .) >"$out/mlserver.log" 2>&1 &
pids+=($!)

ready() { # port: an OIP server that answers ServerReady
  for _ in $(seq 600); do
    $bin/candela bench --server "http://127.0.0.1:$1" --call model-infer --duration 0.1 --warmup 0 \
      --api-key "$key" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  say "the server on port $1 never answered; see $out/*.log"; return 1
}
for port in 50261 50262 50263 50266; do ready $port; done

declare -A servers=([baseline]=50261 [candela-bare]=50262 [candela-production]=50263 [mlserver]=50266)
results=$out/results.jsonl
: > "$results"
for repeat in $(seq "$repeats"); do
  for batch in 1 64; do
    for concurrency in 1 8 32; do
      for server in baseline candela-bare candela-production mlserver; do
        port=${servers[$server]}
        say "repeat $repeat: $server batch $batch concurrency $concurrency"
        # perf_analyzer: three windows of $seconds/3 s after its warm-up (the
        # average of a stable run); the stability threshold is loose on a shared machine.
        csv=$out/pa-$server-$batch-$concurrency-$repeat.csv
        # MLServer does not implement ModelConfig, which perf_analyzer requires
        # ("failed to get model config: Method not found"): `candela bench` alone drives it.
        if [ "$server" = mlserver ]; then
          :
        elif "$tools/bin/perf_analyzer" -m retail -i grpc -u "127.0.0.1:$port" -b "$batch" \
             --concurrency-range "$concurrency" --measurement-interval $((seconds * 1000 / 3)) \
             --stability-percentage 999 -H "authorization:Bearer $key" -f "$csv" >"$out/pa.log" 2>&1; then
          python3 bench/report.py perf-analyzer "$csv" "$server" "$batch" "$concurrency" "$repeat" >>"$results"
        else
          say "perf_analyzer failed against $server: $(tail -1 "$out/pa.log")"
          echo "{\"generator\":\"perf_analyzer\",\"server\":\"$server\",\"batch\":$batch,\"concurrency\":$concurrency,\"repeat\":$repeat,\"failed\":$(tail -1 "$out/pa.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}" >>"$results"
        fi
        $bin/candela bench --server "http://127.0.0.1:$port" --api-key "$key" --call model-infer --rows "$batch" \
          --concurrency "$concurrency" --duration "$seconds" --warmup 1 --features 30 --json \
          | python3 bench/report.py candela-bench - "$server" "$batch" "$concurrency" "$repeat" >>"$results" || true
      done
    done
  done
  for server in candela-bare candela-production; do
    for streams in 1 2; do
      say "repeat $repeat: $server StreamPredict, 1000-row messages, $streams stream(s)"
      $bin/candela bench --server "http://127.0.0.1:${servers[$server]}" --api-key "$key" --call stream-predict \
        --rows 1000 --concurrency "$streams" --stream-window 4 --duration "$seconds" --warmup 1 --json \
        | python3 bench/report.py candela-bench - "$server" 1000 "stream-$streams" "$repeat" >>"$results" || true
    done
  done
done
peak_rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$production/status")
echo "{\"peak_rss_kib\": $peak_rss_kib}" >"$out/memory.json"

say "criterion: the forward pass alone"
cargo bench -p candela-server --bench forward -- --warm-up-time 1 --measurement-time 3 >"$out/criterion.log" 2>&1
python3 bench/report.py criterion target/criterion >"$out/criterion.json"

python3 bench/report.py markdown "$out" >"$out/report.md"
cat "$out/report.md" >>bench/RESULTS.md
cat "$out/report.md"
