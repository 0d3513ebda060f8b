"""Turns bench/gpu-run.sh's measurements into the GPU section of bench/RESULTS.md:
the host, CPU build against cuda build on that host per model and load, the
reduced dtypes, the equivalence test's numbers, and issue 7's two targets checked.

  gpu_report.py record SERVER MODEL POINT   (a `candela bench --json` summary on stdin)
  gpu_report.py markdown OUT_DIR
"""

import json
import pathlib
import sys


def record(server, model, point):
    summary = json.load(sys.stdin)
    print(json.dumps({
        "server": server,
        "model": model,
        "point": point,
        "rows_per_s": summary["rows_per_second"],
        "requests_per_s": summary["requests_per_second"],
        "p50_us": summary["latency_us"]["p50"],
        "p99_us": summary["latency_us"]["p99"],
        "errors": summary["errors"],
    }))


def markdown(out):
    out = pathlib.Path(out)
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    by = {(r["server"], r["model"], r["point"]): r for r in results}
    lines = ["## GPU: CPU build vs cuda build on one host (issue 7)", ""]
    lines += ["Host:", "", "```", (out / "host.txt").read_text().rstrip(), "```", ""]
    startup = out / "startup.jsonl"
    if startup.exists():
        for line in startup.read_text().splitlines():
            s = json.loads(line)
            lines.append(f"- {s['server']} server: SERVING after {s['seconds_to_serving']} s (load + warm-up)")
        lines.append("")

    lines += ["| model | load | CPU rows/s | GPU rows/s | GPU / CPU | CPU p50 / p99 µs | GPU p50 / p99 µs | errors |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    points = []
    for r in results:
        if (r["model"], r["point"]) not in points:
            points.append((r["model"], r["point"]))
    for model, point in points:
        cpu, gpu = by.get(("cpu", model, point)), by.get(("gpu", model, point))
        cell = lambda r: f"{r['rows_per_s']:,.0f}" if r else "–"
        lat = lambda r: f"{r['p50_us']:,.0f} / {r['p99_us']:,.0f}" if r else "–"
        ratio = f"{gpu['rows_per_s'] / cpu['rows_per_s']:.2f}×" if cpu and gpu else "–"
        errors = sum(r["errors"] for r in (cpu, gpu) if r)
        lines.append(f"| {model} | {point} | {cell(cpu)} | {cell(gpu)} | {ratio} | {lat(cpu)} | {lat(gpu)} | {errors} |")
    lines.append("")

    def best(server, model, prefix):
        found = [r["rows_per_s"] for (s, m, p), r in by.items() if s == server and m == model and p.startswith(prefix)]
        return max(found) if found else None

    lines += ["Targets:", ""]
    cpu_stream, gpu_stream = best("cpu", "large", "stream"), best("gpu", "large", "stream")
    if cpu_stream and gpu_stream:
        ratio = gpu_stream / cpu_stream
        lines.append(f"- large model, StreamPredict 1000-row messages: GPU {gpu_stream:,.0f} vs CPU {cpu_stream:,.0f} "
                     f"rows/s = {ratio:.1f}× (target ≥ 10×): {'met' if ratio >= 10 else 'NOT met'}")
    for point in ["predict c1", "predict c8"]:
        cpu, gpu = by.get(("cpu", "retail", point)), by.get(("gpu", "retail", point))
        if cpu and gpu:
            ok = gpu["rows_per_s"] >= 0.95 * cpu["rows_per_s"]
            lines.append(f"- small model, single-row Predict, {point[-2:]}: GPU {gpu['requests_per_s']:,.0f} vs CPU "
                         f"{cpu['requests_per_s']:,.0f} req/s, p50 {gpu['p50_us']:,.0f} vs {cpu['p50_us']:,.0f} µs "
                         f"(target: no worse than CPU): {'met' if ok else 'NOT met'}")
    lines.append("")

    devices = out / "devices.log"
    if devices.exists():
        text = devices.read_text().splitlines()
        lines += ["Equivalence and reduced precision on the GPU (server/tests/devices.rs):", "", "```"]
        lines += [l for l in text if "cuda vs cpu" in l or l.startswith("test ") or l.startswith("test result")]
        lines += ["```", ""]
        lines += [l for l in text if l.startswith("|")]
        lines.append("")
    memory = out / "gpu-memory.txt"
    if memory.exists() and memory.read_text().strip():
        lines += [f"GPU memory per process (pid, used): {memory.read_text().strip()}", ""]
    print("\n".join(lines))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"record": record, "markdown": markdown}[command](*args)
