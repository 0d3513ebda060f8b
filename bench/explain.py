#!/usr/bin/env python3
"""bench/explain.sh's measurement: `measure OUT URL ROUNDS SECONDS CANDELA`.
Trees (the models bench/trees.py trains): the library's own TreeSHAP
(XGBoost `predict(pred_contribs=True)`, LightGBM `predict(pred_contrib=True)`)
against Candela's (`Scorer::contributions` alone, server/benches/scorer.rs
with SCORER_EXPLAIN=1), 1,000 rows per call, on 1 and 2 threads, rounds
interleaved. Networks (the demo's three 30-feature MLPs, sampled Shapley
values against their training medians): `candela bench` Predict of one row
with and without `explain`, and BatchPredict of 10 explained rows, one
caller; the time an explanation adds per row. Prints medians."""
import json
import os
import statistics
import subprocess
import sys
import pathlib

from trees import ROOT, rate, read, rows_of

TREES = ("retail-gbt", "retail-xgb", "categorical-gbt", "categorical-xgb")
NETWORKS = ("retail", "corporate", "sme")


def library(name, out):
    """`at(threads)` → a call giving the library's contributions of its rows."""
    version = out / "repo" / name / "1"
    if (version / "lightgbm.txt").exists():
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(version / "lightgbm.txt"))
        return lambda threads: (lambda x: booster.predict(x, pred_contrib=True, num_threads=threads))
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(version / "xgboost.json"))
    names, types = booster.feature_names, booster.feature_types

    def at(threads):
        booster.set_param({"nthread": threads})
        return lambda x: booster.predict(xgb.DMatrix(x, feature_names=names, feature_types=types,
                                                     enable_categorical=types is not None, nthread=threads),
                                         pred_contribs=True)

    return at


def candela_alone(name, out, threads, seconds):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), SCORER_REPEATS="1", SCORER_SECONDS=str(seconds),
               SCORER_EXPLAIN="1")
    run = subprocess.run(
        ["cargo", "bench", "-q", "-p", "candela-server", "--bench", "scorer", "--",
         str(out / "repo" / name / "1"), str(out / "data" / rows_of(name)), "1000"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(run.stdout.splitlines()[-1])["rows_per_s"]


def bench(candela, url, model, call, rows, explain, seconds):
    run = subprocess.run([candela, "--server", url, "bench", "--call", call, "--rows", str(rows), "--model", model,
                          "--concurrency", "1", "--duration", str(seconds), "--warmup", "0.5", "--explain",
                          str(explain), "--json"], check=True, capture_output=True, text=True)
    result = json.loads(run.stdout)
    return result["rows_per_second"], result["latency_us"]["p50"]


def measure(out, url, rounds, seconds, candela):
    trees = {(m, k): [] for m in TREES for k in ("lib1", "lib2", "can1", "can2")}
    networks = {(m, k): [] for m in NETWORKS for k in ("plain", "one", "batch")}
    for _ in range(rounds):
        for name in TREES:
            rows, _ = read(out / "data" / rows_of(name))
            contributions = library(name, out)
            for threads in (1, 2):
                trees[(name, f"lib{threads}")].append(rate(contributions(threads), rows, 1000, seconds))
                trees[(name, f"can{threads}")].append(candela_alone(name, out, threads, seconds))
        for name in NETWORKS:
            networks[(name, "plain")].append(bench(candela, url, name, "predict", 1, 0, seconds))
            networks[(name, "one")].append(bench(candela, url, name, "predict", 1, 3, seconds))
            networks[(name, "batch")].append(bench(candela, url, name, "batch-predict", 10, 3, seconds))
    print(f"Medians of {rounds} rounds, {seconds} s each.")
    print()
    print("| model | library TreeSHAP, 1 thread (rows/s) | Candela, 1 thread | ratio | library, 2 threads | Candela, 2 threads | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in TREES:
        m = {k: statistics.median(trees[(name, k)]) for k in ("lib1", "lib2", "can1", "can2")}
        print(f"| {name} | {m['lib1']:,.0f} | {m['can1']:,.0f} | {m['can1'] / m['lib1']:.2f} | "
              f"{m['lib2']:,.0f} | {m['can2']:,.0f} | {m['can2'] / m['lib2']:.2f} |")
    print()
    print("| network | Predict p50 (µs) | Predict explain 3 p50 (µs) | added per row (ms) | BatchPredict 10 rows explain 3 (rows/s) | per explained row (ms) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in NETWORKS:
        plain = statistics.median(r[1] for r in networks[(name, "plain")])
        one = statistics.median(r[1] for r in networks[(name, "one")])
        batch = statistics.median(r[0] for r in networks[(name, "batch")])
        print(f"| {name} | {plain:,.0f} | {one:,.0f} | {(one - plain) / 1000:.2f} | {batch:,.0f} | {1000 / batch:.2f} |")


if __name__ == "__main__":
    measure(pathlib.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
