#!/usr/bin/env python3
"""bench/score.sh's two steps. `tables OUT ROWS`: OUT/rows.parquet and
OUT/rows.csv, ROWS demo retail rows as pandas writes them: the held-out rows
tiled, each copy's continuous features scaled by a hair (1 + k·1e-6 for copy
k) so that values repeat no more than in real data (a plain tiling would let
Parquet's dictionaries shrink the file tenfold), a `txn_id` string column first. `measure OUT URL ROUNDS CANDELA
SERVER_PID`: the timed rounds and the table of medians, printed as Markdown."""
import json
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def tables(out, rows):
    held_out = pd.read_csv(out / "data" / "retail-held-out.csv").drop(columns=["label"])
    reps = -(-rows // len(held_out))
    table = pd.concat([held_out] * reps, ignore_index=True).head(rows)
    copy = np.arange(rows) // len(held_out)
    for name in table.columns:
        if table[name].nunique() > 2:
            table[name] = table[name] * (1 + copy * 1e-6)
    table.insert(0, "txn_id", [f"t{i}" for i in range(rows)])
    table.to_parquet(out / "rows.parquet", engine="pyarrow", compression="snappy", index=False)
    table.to_csv(out / "rows.csv", index=False)
    for name in ["rows.parquet", "rows.csv"]:
        print(f"{name}: {rows} rows, {(out / name).stat().st_size / 1e6:.0f} MB", file=sys.stderr)


def timed(command):
    """Seconds and peak RSS (MB) of `command`, run under GNU time's -f."""
    start = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-f", "%M"] + command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"{command} failed ({run.returncode}): {run.stderr}")
    return seconds, int(run.stderr.strip().splitlines()[-1]) / 1024


def score(candela, url, out, kind):
    seconds, rss = timed([candela, "--server", url, "score", "--segment", "retail",
                          "--input", str(out / f"rows.{kind}"), "--output", str(out / f"scored.{kind}")])
    return seconds, rss


def stream_ceiling(candela, url, streams):
    run = subprocess.run([candela, "--server", url, "bench", "--call", "stream-predict", "--columnar", "--model", "retail",
                          "--rows", "1000", "--concurrency", str(streams), "--duration", "5", "--warmup", "1",
                          "--json"], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)["rows_per_second"]


def server_peak_mb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(out, url, rounds, candela, pid):
    rows = pq.ParquetFile(out / "rows.parquet").metadata.num_rows
    results = {k: [] for k in ["parquet", "csv", "stream1", "stream2"]}
    rss = {"parquet": [], "csv": []}
    for r in range(rounds):
        for kind in ["parquet", "csv"]:
            seconds, peak = score(candela, url, out, kind)
            results[kind].append(rows / seconds)
            rss[kind].append(peak)
        results["stream1"].append(stream_ceiling(candela, url, 1))
        results["stream2"].append(stream_ceiling(candela, url, 2))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items()), file=sys.stderr)
    scored = pq.read_table(out / "scored.parquet", columns=["txn_id", "prediction", "p_fraud", "error"])
    assert scored.num_rows == rows and scored.column("error").null_count == rows, "every row scored"
    assert scored.column("txn_id")[rows - 1].as_py() == f"t{rows - 1}", "rows in input order"
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"| path | rows/s (median of {rounds}) | runs | client peak RSS |")
    print("| --- | --- | --- | --- |")
    for kind, name in [("parquet", "Parquet → Parquet"), ("csv", "CSV → CSV")]:
        runs = ", ".join(f"{v / 1e6:.2f} M" for v in results[kind])
        print(f"| `candela score` {name} | {med[kind]:,.0f} | {runs} | {max(rss[kind]):.0f} MB |")
    for k, name in [("stream1", "1 stream"), ("stream2", "2 streams")]:
        runs = ", ".join(f"{v / 1e6:.2f} M" for v in results[k])
        print(f"| StreamPredict ceiling, {name}, 1,000-row messages | {med[k]:,.0f} | {runs} | |")
    print(f"\nParquet / CSV: {med['parquet'] / med['csv']:.2f}; Parquet / 2-stream ceiling: "
          f"{med['parquet'] / med['stream2']:.2f}; server peak RSS over the run: {server_peak_mb(pid):.0f} MB; "
          f"{rows:,} rows, input {(out / 'rows.parquet').stat().st_size / 1e6:.0f} MB Parquet, "
          f"{(out / 'rows.csv').stat().st_size / 1e6:.0f} MB CSV")


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[2])
    if sys.argv[1] == "tables":
        tables(out, int(sys.argv[3]))
    else:
        measure(out, sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
