#!/usr/bin/env bash
# The GPU check, from a machine with no GPU (the GPU host has no Rust toolchain):
#   1. builds the `cuda` server and the CUDA equivalence test (server/tests/devices.rs) with
#      nvcc 13.0 from PyPI and link stubs (scripts/setup-cuda-build), for compute capability
#      ${CUDA_COMPUTE_CAP:-90} (H100/H200); and the CPU server, candela and candela-train;
#   2. smoke-tests the cuda binary here, with the stubs standing in for the driver: it starts,
#      `--device auto` falls back to the CPU and serves, `--device cuda:0` refuses to start
#      with a message naming the GPU;
#   3. packages everything bench/gpu-run.sh needs into .gpu/package.tar.xz (git-ignored) and
#      prints the exact commands that run it on the GPU host and record the results.
# SMOKE_ONLY=1 stops after step 2 (what CI runs): it builds only the cuda server, in the dev
# profile (dependencies optimised as in release), sharing what it can with the test build
# before it, and uses that build's `candela`. The full check
# takes ~12 min on 2 cores from a warm target/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
say() { echo "gpu-check: $*" >&2; }

cargo fetch --locked >/dev/null
cuda_home=$(scripts/setup-cuda-build)
export CUDA_HOME=$cuda_home PATH=$cuda_home/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-1}

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

if [ "${SMOKE_ONLY:-0}" = 1 ]; then
  say "building the cuda server, dev profile (the first build compiles candle's kernels: ~10 min)"
  # `train` as well: the test build has it (test-util), and its rand turns on features of
  # crates deep in the tree (getrandom's std, hence ring, rustls, tonic…); with the same
  # features this build reuses the test build's crates instead of compiling them again.
  cargo build --locked --features cuda,train -p candela-server --bin candela-server
  cp "$target/debug/candela-server" "$work/candela-server-cuda"
  # The client of the test build before it (CI), else one built now.
  [ -x "$target/debug/candela" ] || cargo build --locked -p candela-cli --bin candela
  cp "$target/debug/candela" "$work/candela"
else
  say "building the cuda server and the CUDA equivalence test (the first build compiles candle's kernels: ~10 min)"
  cargo build --release --locked --features cuda -p candela-server --bin candela-server
  cp "$target/release/candela-server" "$work/candela-server-cuda"
  devices_test=$(cargo test --release --locked --features cuda,test-util -p candela-server --test devices --no-run \
    --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "devices" and m.get("executable"):
        print(m["executable"])')
  cp "$devices_test" "$work/devices-test"
  say "building the CPU server, candela and candela-train"
  cargo build --release --locked -p candela-server --features train --bin candela-server --bin candela-train \
    -p candela-cli --bin candela
  for binary in candela candela-train; do cp "$target/release/$binary" "$work/$binary"; done
  cp "$target/release/candela-server" "$work/candela-server-cpu"
fi

say "smoke test: the cuda binary on this GPU-less machine, the stubs standing in for libcuda (the CUDA runtime from the nvcc wheels)"
stubs=$cuda_home/lib/stubs
cuda_server=(env "LD_LIBRARY_PATH=$stubs:$cuda_home/lib" "$work/candela-server-cuda" --models models
  --metrics-listen off --http-listen off --drain-seconds 0)
if "${cuda_server[@]}" --device cuda:0 --listen 127.0.0.1:0 >"$work/refused.log" 2>&1; then
  say "FAILED: --device cuda:0 started without a GPU"; exit 1
fi
grep -q "cuda:0: cannot open the GPU" "$work/refused.log" || {
  cat "$work/refused.log" >&2; say "FAILED: --device cuda:0 did not say why it refused"; exit 1; }
port=${GPU_CHECK_PORT:-50319}
"${cuda_server[@]}" --device auto --listen "127.0.0.1:$port" >"$work/auto.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  "$work/candela" --server "http://127.0.0.1:$port" health >/dev/null 2>&1 && break
  sleep 0.1
done
"$work/candela" --server "http://127.0.0.1:$port" models | grep -q "device cpu" || {
  cat "$work/auto.log" >&2; say "FAILED: --device auto did not fall back to the CPU"; exit 1; }
grep -q "no usable GPU, using the CPU" "$work/auto.log" || {
  cat "$work/auto.log" >&2; say "FAILED: the fallback was not logged"; exit 1; }
"$work/candela" --server "http://127.0.0.1:$port" predict --segment retail \
  --features "$(python3 -c 'print(",".join(["0.5"] * 30))')" >/dev/null
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
say "smoke test passed: --device cuda:0 refused with a reason, --device auto fell back to the CPU and served"
[ "${SMOKE_ONLY:-0}" = 1 ] && exit 0

package=$root/.gpu
mkdir -p "$package" "$work/pkg/bin"
mv "$work"/candela-server-cuda "$work"/candela-server-cpu "$work"/devices-test "$work"/candela "$work"/candela-train "$work/pkg/bin/"
cp -r models "$work/pkg/models"
cp bench/gpu-run.sh bench/gpu_report.py "$work/pkg/"
say "packaging (xz)"
tar -C "$work/pkg" -cf - . | xz -6 -T0 > "$package/package.tar.xz"
size=$(du -m "$package/package.tar.xz" | cut -f1)
say "wrote .gpu/package.tar.xz (${size} MiB)"
cat <<EOF

On the GPU host (the workplace's \`device\` tool: run it from the repository root, carrying
the package; it has no Rust toolchain and needs none):

  run  carry=[".gpu/package.tar.xz"]  command=
    mkdir -p /tmp/candela && tar -xJf .gpu/package.tar.xz -C /tmp/candela && OUT=\$OUT /tmp/candela/gpu-run.sh

It prints the GPU section for bench/RESULTS.md and leaves it, with the raw results, the
equivalence test's log and both servers' logs, under \$OUT. Append \$OUT/report.md to
bench/RESULTS.md. To try the script itself here (the "GPU" server on the CPU):

  mkdir -p /tmp/candela && tar -xJf .gpu/package.tar.xz -C /tmp/candela && DRY_RUN=1 /tmp/candela/gpu-run.sh
EOF
