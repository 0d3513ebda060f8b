# What bench/trees.sh and bench/explain.sh share, sourced after common.sh:
# the release binaries and the scorer benchmark built, the trees venv made
# ($python), retail's rows exported and the forests bench/trees.py trains
# written into $out/repo.
build_release --features candela-server/train
cargo bench -q -p candela-server --bench scorer --no-run 2>/dev/null
python=$(bench_venv bench-trees-venv "xgboost, lightgbm, pandas" xgboost-cpu==3.2.0 lightgbm==4.7.0 numpy pandas)
"$target/release/candela-train" --segments retail --export-data "$out/data" >/dev/null
"$python" bench/trees.py train "$out"
