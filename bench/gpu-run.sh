#!/usr/bin/env bash
# Runs on the GPU host, from the unpacked package bench/gpu-check.sh makes (the host
# has no Rust toolchain; everything it runs is in ./bin). Writes to ${OUT:-./out}:
#   host.txt        GPU, driver, CPU, OS
#   devices.log     the CUDA equivalence test (CPU vs GPU within 1e-4, passes of 1/64/1000
#                   rows) and f16/bf16 against f32 on the GPU, over the demo models and the
#                   large model
#   results.jsonl   `candela bench` against the CPU build and the cuda build of the server on
#                   this host: small (retail, 30→32→16→2) and large (256→2048→2048→2, trained
#                   here by candela-train) models, Predict c1/c8, BatchPredict 64 and 1000 rows,
#                   StreamPredict 1000-row messages; the large model also in f16 and bf16
#   report.md       the GPU section for bench/RESULTS.md (bench/gpu_report.py)
#   *.log           both servers' logs, including the time to SERVING (kernel JIT on a fresh host)
# DRY_RUN=1 runs the same plumbing with the CPU build in the "GPU" server's place and short
# points, so the script itself can be tried on a machine without a GPU (and without libcuda,
# which the cuda build needs to start at all); the equivalence test is skipped.
set -euo pipefail
cd "$(dirname "$0")"
out=${OUT:-$PWD/out}
mkdir -p "$out"
seconds=${SECONDS_PER_POINT:-5}
gpu_device=cuda:0 gpu_binary=./bin/candela-server-cuda
if [ "${DRY_RUN:-0}" = 1 ]; then
  gpu_device=cpu gpu_binary=./bin/candela-server-cpu seconds=${SECONDS_PER_POINT:-1}
fi
threads=$(nproc)
say() { echo "gpu-run: $*" >&2; }
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads"
  echo "os: $(. /etc/os-release && echo "$PRETTY_NAME"), glibc $(ldd --version | head -1 | awk '{print $NF}')"
} > "$out/host.txt"
cat "$out/host.txt" >&2

say "training the large model (256 features → 2048 → 2048 → 2) with candela-train"
rm -rf repo && cp -r models repo
./bin/candela-train --out repo --segments retail --name large --features 256 --hidden 2048,2048 \
  --epochs 1 --train-rows 20000 >&2
for dtype in f16 bf16; do
  mkdir -p "repo/large-$dtype"
  cp -r repo/large/1 "repo/large-$dtype/1"
  sed -i "s/\"dtype\": \"f32\"/\"dtype\": \"$dtype\"/" "repo/large-$dtype/1/model.json"
done

if [ "${DRY_RUN:-0}" = 1 ]; then
  say "dry run: no equivalence test"
else
  say "equivalence test: CPU vs GPU, f16/bf16 vs f32 on the GPU"
  CANDELA_TEST_DEVICE=cuda:0 CANDELA_DEMO_MODELS=$PWD/models CANDELA_LARGE_MODEL=$PWD/repo/large/1 \
    ./bin/devices-test --nocapture --test-threads 1 > "$out/devices.log" 2>&1 || {
      cat "$out/devices.log" >&2; say "the equivalence test FAILED"; exit 1; }
  cat "$out/devices.log" >&2
fi

# server NAME BINARY PORT FLAGS...: starts it and waits for SERVING, recording how long it took.
server() {
  local name=$1 binary=$2 port=$3
  shift 3
  local start=$SECONDS
  "$binary" --models repo --listen "127.0.0.1:$port" --metrics-listen off --http-listen off --log-format json \
    --max-rows 1000 "$@" 2>"$out/$name.log" &
  pids+=($!)
  for _ in $(seq 1800); do
    ./bin/candela --server "http://127.0.0.1:$port" health >/dev/null 2>&1 && {
      echo "{\"server\":\"$name\",\"seconds_to_serving\":$((SECONDS - start))}" >> "$out/startup.jsonl"
      return 0
    }
    sleep 0.1
  done
  say "$name never became SERVING; see $out/$name.log"
  return 1
}
: > "$out/startup.jsonl"
# The CPU build gets every core for its compute (one worker, a thread per core) so
# the large model's matrix products are not starved; the cuda build uses the defaults.
server cpu ./bin/candela-server-cpu 50301 --device cpu --compute-threads "$threads"
server gpu "$gpu_binary" 50302 --device "$gpu_device"
./bin/candela --server http://127.0.0.1:50302 models > "$out/gpu-models.txt"
grep -q "device $gpu_device" "$out/gpu-models.txt" || { say "the cuda server does not report $gpu_device"; exit 1; }

results=$out/results.jsonl
: > "$results"
# point SERVER PORT MODEL NAME BENCH-FLAGS...
point() {
  local server=$1 port=$2 model=$3 name=$4
  shift 4
  say "$server $model $name"
  ./bin/candela bench --server "http://127.0.0.1:$port" --model "$model" --duration "$seconds" --warmup 1 --json "$@" \
    | python3 gpu_report.py record "$server" "$model" "$name" >> "$results" \
    || say "$server $model $name failed"
}
for model in retail large; do
  for target in cpu:50301 gpu:50302; do
    server=${target%%:*} port=${target##*:}
    point "$server" "$port" "$model" "predict c1" --call predict --concurrency 1
    point "$server" "$port" "$model" "predict c8" --call predict --concurrency 8
    point "$server" "$port" "$model" "batch 64 c8" --call batch-predict --rows 64 --concurrency 8
    point "$server" "$port" "$model" "batch 1000 c4" --call batch-predict --rows 1000 --concurrency 4
    point "$server" "$port" "$model" "stream 1000 x1" --call stream-predict --rows 1000 --concurrency 1
    point "$server" "$port" "$model" "stream 1000 x2" --call stream-predict --rows 1000 --concurrency 2 --connections 2
  done
done
for model in large-f16 large-bf16; do
  point gpu 50302 "$model" "batch 1000 c4" --call batch-predict --rows 1000 --concurrency 4
  point gpu 50302 "$model" "stream 1000 x2" --call stream-predict --rows 1000 --concurrency 2 --connections 2
done
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader > "$out/gpu-memory.txt" 2>/dev/null ||
  rm -f "$out/gpu-memory.txt"

python3 gpu_report.py markdown "$out" > "$out/report.md"
cat "$out/report.md"
