#!/usr/bin/env bash
# The Python peer for bench/run.sh: Seldon MLServer with its scikit-learn
# runtime, in a virtual environment under .tools/mlserver (git-ignored), and
# an MLP of the demo model's shape trained by bench/mlserver/train.py.
# Prints the model repository directory to serve (`mlserver start DIR`).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tools=${CANDELA_TOOLS:-$root/.tools}
venv=$tools/mlserver
if [ ! -x "$venv/bin/mlserver" ]; then
  echo "mlserver/setup.sh: installing mlserver and mlserver-sklearn from PyPI into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q mlserver==1.7.1 mlserver-sklearn==1.7.1
fi
repo=$tools/mlserver-models
if [ ! -f "$repo/retail/model.joblib" ]; then
  "$venv/bin/python" "$root/bench/mlserver/train.py" "$repo" >&2
fi
echo "$repo"
