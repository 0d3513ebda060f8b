#!/usr/bin/env bash
# The hot-path cost of the forward pass's overflow checks (issue 12): the
# criterion forward benchmark (demo model, 1 / 64 / 1000 rows, one kernel
# thread) built from a commit without the checks (BEFORE, default d73ee0d, the
# last one before them) and from the working tree, run in alternating
# rounds on this machine so both see the same noise; medians of ROUNDS
# (default 3) per point, and their ratio. Prints a Markdown table.
# Usage: bench/overflow-check.sh [BEFORE-commit]
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:-d73ee0d}
rounds=${ROUNDS:-3}
out=$PWD/bench/out/overflow-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
target=${CARGO_TARGET_DIR:-$PWD/target}

build() { # <source dir> <name>: the forward bench binary, copied to $out/<name>
  (cd "$1" && CARGO_TARGET_DIR=$target cargo bench -p candela-server --bench forward --no-run --message-format=json 2>/dev/null) |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "forward" and m.get("executable"):
        print(m["executable"])' | tail -1 | xargs -I{} cp {} "$out/$2"
}

worktree=$(mktemp -d)
trap 'git worktree remove --force "$worktree" >/dev/null 2>&1 || true' EXIT
git worktree add --detach "$worktree" "$before" >/dev/null
build "$worktree" before
build . after

for round in $(seq "$rounds"); do
  for build in before after; do
    # The bench loads ../models relative to its crate: each build reads its own
    # revision's models (the same weights; model.json may gain fields).
    dir=server
    [ "$build" = before ] && dir=$worktree/server
    (cd "$dir" && "$out/$build" --bench 'threads-1/' --warm-up-time 1 --measurement-time 3 --noplot) \
      >"$out/$build-$round.txt" 2>&1
  done
done

python3 - "$out" "$rounds" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
unit = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3}
def times(path):
    found = {}
    text = open(path).read()
    for rows, mid, u in re.findall(r"threads-1/(\d+)\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", text):
        found[int(rows)] = float(mid) * unit[u]
    return found
runs = {b: [times(f"{out}/{b}-{r}.txt") for r in range(1, rounds + 1)] for b in ("before", "after")}
print("| rows per pass | without checks (median µs) | with checks (median µs) | ratio |")
print("| --- | --- | --- | --- |")
for rows in sorted(runs["before"][0]):
    b = statistics.median(run[rows] for run in runs["before"])
    a = statistics.median(run[rows] for run in runs["after"])
    print(f"| {rows} | {b:.1f} | {a:.1f} | {a / b:.3f} |")
PY
