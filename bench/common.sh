# The start-up every benchmark script shares; sourced as
# `source "$(dirname "$0")/common.sh" NAME`. Afterwards the working directory
# is the repository's root, $target the cargo target directory and $out a
# fresh results directory (bench/out/NAME-<UTC time>), and these are defined:
#   build_release [cargo args…]   builds the release candela-server and candela
#   serve LOG ARGS…               starts the release server with ARGS (JSON logs
#                                 in $out/LOG); its pid is $pid
#   wait_healthy URL              waits until the server at URL answers health
#   at_exit COMMAND               runs COMMAND on exit, after every server is stopped
#   build_before COMMIT           checks COMMIT out in a worktree ($worktree, removed on
#                                 exit) and builds its release server as $out/before
#                                 (BEFORE_BINARY=FILE: that binary instead, e.g. an
#                                 earlier run's)
#   bench_venv NAME CHECK PKG…    a Python virtual environment under .tools/NAME
#                                 where `import CHECK` works (PKG… installed once);
#                                 prints its python
# Every server started by `serve` (or whose pid is added to `pids`) is stopped
# on exit, however the script ends.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
out=$PWD/bench/out/$1-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
pids=()
exits=()
pid=
at_exit() { exits+=("$1"); }
bench_exit() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  for command in "${exits[@]}"; do eval "$command"; done
}
trap bench_exit EXIT
build_release() { cargo build --release -q -p candela-server -p candela-cli "$@"; }
build_before() {
  worktree=$(mktemp -d)
  at_exit 'git worktree remove --force "$worktree" >/dev/null 2>&1 || true'
  git worktree add --detach "$worktree" "$1" >/dev/null
  if [ -n "${BEFORE_BINARY:-}" ]; then
    cp "$BEFORE_BINARY" "$out/before"
  else
    (cd "$worktree" && CARGO_TARGET_DIR=$target cargo build --release -q -p candela-server)
    cp "$target/release/candela-server" "$out/before"
    # The shared target directory now holds the older proto's generated code:
    # make the working tree's build generate its own again.
    find proto -name '*.proto' -exec touch {} +
  fi
}
serve() {
  local log=$1
  shift
  "$target/release/candela-server" "$@" --log-format json 2>"$out/$log" &
  pid=$!
  pids+=("$pid")
}
wait_healthy() { until "$target/release/candela" --server "$1" health >/dev/null 2>&1; do sleep 0.1; done; }
bench_venv() {
  local venv=$PWD/.tools/$1 check=$2
  shift 2
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import $check" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "$@" >&2
  fi
  echo "$venv/bin/python"
}
