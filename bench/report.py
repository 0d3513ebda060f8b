"""Turns bench/run.sh's raw results into one JSON line per measurement, and
the collected lines into the markdown section appended to bench/RESULTS.md:
medians of the repeats per (generator, server, batch, concurrency), ratios to
the transport baseline and to MLServer, and each target of issue 5 checked.

  report.py perf-analyzer CSV SERVER BATCH CONCURRENCY REPEAT
  report.py candela-bench FILE|- SERVER BATCH CONCURRENCY REPEAT
  report.py criterion TARGET_CRITERION_DIR
  report.py markdown OUT_DIR
"""

import csv
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

SERVERS = ["baseline", "candela-bare", "candela-production", "mlserver"]


def record(generator, server, batch, concurrency, repeat, rows_per_s, p50, p99, errors=0):
    batch = int(batch)
    return {
        "generator": generator,
        "server": server,
        "batch": batch,
        "concurrency": concurrency if concurrency.startswith("stream") else int(concurrency),
        "repeat": int(repeat),
        "rows_per_s": rows_per_s,
        "requests_per_s": rows_per_s / batch,
        "p50_us": p50,
        "p99_us": p99,
        "errors": errors,
    }


def perf_analyzer(path, server, batch, concurrency, repeat):
    with open(path, newline="") as f:
        row = next(csv.DictReader(f))
    # perf_analyzer's "Inferences/Second" counts rows (requests × batch).
    return record("perf_analyzer", server, batch, concurrency, repeat, float(row["Inferences/Second"]),
                  float(row["p50 latency"]), float(row["p99 latency"]))


def candela_bench(path, server, batch, concurrency, repeat):
    text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text()
    summary = json.loads(text)
    return record("candela bench", server, batch, concurrency, repeat, summary["rows_per_second"],
                  summary["latency_us"]["p50"], summary["latency_us"]["p99"], summary["errors"])


def criterion(root):
    found = {}
    for estimates in sorted(pathlib.Path(root).glob("forward_retail_threads-*/*/new/estimates.json")):
        threads = estimates.parts[-4].split("-")[-1]
        rows = estimates.parts[-3]
        median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
        found[f"threads {threads}, {rows} rows"] = median_ns / 1000.0
    return found


def medians(records):
    groups = {}
    for r in records:
        if "failed" in r:
            continue
        key = (r["generator"], r["server"], r["batch"], r["concurrency"])
        groups.setdefault(key, []).append(r)
    return {
        key: {
            "rows_per_s": statistics.median(r["rows_per_s"] for r in rs),
            "requests_per_s": statistics.median(r["requests_per_s"] for r in rs),
            "p50_us": statistics.median(r["p50_us"] for r in rs),
            "p99_us": statistics.median(r["p99_us"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "repeats": len(rs),
        }
        for key, rs in groups.items()
    }


def markdown(out):
    out = pathlib.Path(out)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    failures = [r for r in records if "failed" in r]
    m = medians(records)
    memory = json.loads((out / "memory.json").read_text())
    forward = json.loads((out / "criterion.json").read_text()) if (out / "criterion.json").exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    repeats = max((r["repeat"] for r in records), default=0)
    lines = [
        "",
        f"## {datetime.date.today().isoformat()} — `bench/run.sh` (commit {commit})",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; everything on "
        "127.0.0.1, load generators sharing the cores with the servers. Open Inference Protocol `ModelInfer`, "
        f"30 FP32 features as raw contents, model `retail`. Medians of {repeats} repeats; each point "
        "≥ 5 s after warm-up. Throughput in requests/s (rows/s = requests × batch); latency in µs.",
        "",
    ]
    for generator in ["perf_analyzer", "candela bench"]:
        lines += [f"### {generator}", "",
                  "| batch | concurrency | " + " | ".join(SERVERS) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in SERVERS) + " |"]
        for batch in [1, 64]:
            for concurrency in [1, 8, 32]:
                cells = []
                for server in SERVERS:
                    v = m.get((generator, server, batch, concurrency))
                    cells.append("—" if v is None else
                                 f"{v['requests_per_s']:,.0f} req/s, p50 {v['p50_us']:,.0f}, p99 {v['p99_us']:,.0f}"
                                 + (f", {v['errors']} errors" if v["errors"] else ""))
                lines.append(f"| {batch} | {concurrency} | " + " | ".join(cells) + " |")
        lines.append("")

    def ratio(generator, server, other, batch, concurrency, field="requests_per_s"):
        a, b = m.get((generator, server, batch, concurrency)), m.get((generator, other, batch, concurrency))
        return None if a is None or b is None or not b[field] else a[field] / b[field]

    def fmt(x, digits=2):
        return "—" if x is None else f"{x:.{digits}f}"

    lines += ["### Targets (issue 5)", "",
              "| target | generator | Candela bare | Candela production | met |",
              "| --- | --- | --- | --- | --- |"]
    for generator in ["perf_analyzer", "candela bench"]:
        def row(name, values, ok):
            met = "—" if any(v is None for v in values) else ("yes" if all(ok(v) for v in values) else "no")
            lines.append(f"| {name} | {generator} | " + " | ".join(fmt(v) for v in values) + f" | {met} |")
        row("batch 1, c32: throughput ÷ baseline ≥ 0.85",
            [ratio(generator, s, "baseline", 1, 32) for s in ("candela-bare", "candela-production")], lambda v: v >= 0.85)
        base = m.get((generator, "baseline", 1, 1))
        row("batch 1, c1: p50 − baseline p50 ≤ 25 µs",
            [None if base is None or (generator, s, 1, 1) not in m else m[(generator, s, 1, 1)]["p50_us"] - base["p50_us"]
             for s in ("candela-bare", "candela-production")], lambda v: v <= 25)
        row("batch 64, c8: rows/s ÷ baseline ≥ 0.7",
            [ratio(generator, s, "baseline", 64, 8) for s in ("candela-bare", "candela-production")], lambda v: v >= 0.7)
        row("batch 1, c8: throughput ÷ MLServer ≥ 20",
            [ratio(generator, s, "mlserver", 1, 8) for s in ("candela-bare", "candela-production")], lambda v: v >= 20)
        row("batch 1, c8: MLServer p99 ÷ p99 ≥ 20",
            [None if ratio(generator, s, "mlserver", 1, 8, "p99_us") is None else 1 / ratio(generator, s, "mlserver", 1, 8, "p99_us")
             for s in ("candela-bare", "candela-production")], lambda v: v >= 20)
    for streams in ("stream-1", "stream-2"):
        stream = [m.get(("candela bench", s, 1000, streams)) for s in ("candela-bare", "candela-production")]
        lines.append(f"| StreamPredict, 1000-row messages, {streams[-1]} stream(s): ≥ 1,000,000 rows/s | candela bench | "
                     + " | ".join("—" if v is None else f"{v['rows_per_s']:,.0f}" for v in stream)
                     + f" | {'—' if None in stream else ('yes' if all(v['rows_per_s'] >= 1e6 for v in stream) else 'no')} |")
    rss_mib = memory["peak_rss_kib"] / 1024
    lines.append(f"| peak RSS under load ≤ 64 MiB (three demo models) | all | — | {rss_mib:.1f} MiB | "
                 f"{'yes' if rss_mib <= 64 else 'no'} |")
    lines.append("")
    if forward:
        lines += ["### The forward pass alone (criterion, `cargo bench -p candela-server --bench forward`)", "",
                  "| candle CPU threads, rows | median |", "| --- | --- |"]
        lines += [f"| {k} | {v:,.1f} µs |" for k, v in forward.items()]
        lines.append("")
    if failures:
        lines += ["Failed points:", ""]
        lines += [f"- {r['generator']} → {r['server']} batch {r['batch']} c{r['concurrency']}: {r['failed']}" for r in failures]
        lines.append("")
    return "\n".join(lines)


def main(argv):
    command = argv[1]
    if command == "perf-analyzer":
        print(json.dumps(perf_analyzer(*argv[2:7])))
    elif command == "candela-bench":
        print(json.dumps(candela_bench(*argv[2:7])))
    elif command == "criterion":
        print(json.dumps(criterion(argv[2])))
    elif command == "markdown":
        print(markdown(argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
