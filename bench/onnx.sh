#!/usr/bin/env bash
# ONNX models against onnxruntime's own session on the same rows, in one
# run (bench/onnx_models.py): a network in f32 and INT8 (quantize_dynamic), and
# scikit-learn pipelines (imputing, scaling) before tree ensembles with their
# bare ensembles, at 1 and 1,000 rows per call, medians of rounds, both on
# the same thread count. Also prints the model files' sizes.
# Usage: bench/onnx.sh      (ROUNDS=5 SECONDS_PER_RUN=1 THREADS=1 by default)
rounds=${ROUNDS:-5}
seconds=${SECONDS_PER_RUN:-1}
threads=${THREADS:-1}
source "$(dirname "$0")/common.sh" onnx
cargo bench -q -p candela-server --bench scorer --no-run 2>/dev/null
python=$(bench_venv bench-onnx-venv "onnxruntime, onnx" onnxruntime==1.32.0 onnx==1.23.2 numpy)
"$python" bench/onnx_models.py "$out" "$rounds" "$seconds" "$threads" | tee "$out/results.md"
for model in sklearn-multi onnx-int8-multi; do
  echo "$model: $(stat -c %s tests/fixtures/formats/repo/$model/1/model.onnx) bytes" | tee -a "$out/results.md"
done
