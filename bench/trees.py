#!/usr/bin/env python3
"""bench/trees.sh's two steps. `train OUT`: an XGBoost model of retail's
training rows into OUT/repo/retail-xgb/1 beside a copy of the demo's
LightGBM model; both libraries' regressors on the same rows (squared error,
200 trees); and both libraries' categorical forests (200 trees) on a
DataFrame of 4 numbers and 2 `category` columns (merchant: 40 categories,
country: 12), whose held-out rows carry the categories as codes.
`measure OUT URL ROUNDS SECONDS CANDELA`: the timed rounds (library predict
and Candela's evaluator on 1 and 2 threads, then gRPC) and the table of
medians."""
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def read(path):
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return table[:, :-1].astype(np.float32), table[:, -1].astype(int)


def train(out):
    import xgboost as xgb

    x, y = read(out / "data" / "retail-train.csv")
    features = (out / "data" / "retail-train.csv").read_text().split("\n", 1)[0].split(",")[:-1]
    params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 1, "seed": 2026}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=200)
    version = out / "repo" / "retail-xgb" / "1"
    version.mkdir(parents=True, exist_ok=True)
    booster.save_model(version / "xgboost.json")
    manifest = {"features": features, "labels": ["legit", "fraud"], "format": "xgboost", "file": "xgboost.json"}
    (version / "model.json").write_text(json.dumps(manifest))
    shutil.copytree(ROOT / "models" / "retail-gbt", out / "repo" / "retail-gbt", dirs_exist_ok=True)
    regressors(out, x, y, features)
    categorical(out)


def save(out, name, file, manifest, write):
    version = out / "repo" / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    write(version / file)
    (version / "model.json").write_text(json.dumps({**manifest, "file": file}))


def regressors(out, x, y, features):
    """Squared-error regressors of the fraud label (200 trees each)."""
    import lightgbm as lgb
    import xgboost as xgb

    params = {"objective": "reg:squarederror", "max_depth": 6, "eta": 0.1, "nthread": 1, "seed": 2026}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=200)
    manifest = {"features": features, "task": "regression", "format": "xgboost"}
    save(out, "retail-xgb-reg", "xgboost.json", manifest, booster.save_model)
    params = {"objective": "regression", "num_leaves": 31, "num_threads": 1, "verbose": -1}
    model = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=200)
    save(out, "retail-gbt-reg", "lightgbm.txt", {**manifest, "format": "lightgbm"}, model.save_model)


def categorical(out):
    """Categorical forests on a synthetic frame; rows as codes for both sides."""
    import lightgbm as lgb
    import pandas as pd
    import xgboost as xgb

    rng = np.random.default_rng(2026)
    merchants, countries = [f"m{i}" for i in range(40)], [f"c{i}" for i in range(12)]

    def frame(count):
        merchant, country = rng.integers(0, 40, count), rng.integers(0, 12, count)
        numbers = rng.normal(size=(count, 4)).astype(np.float32)
        risk = numbers[:, 0] - numbers[:, 1] + (merchant % 7 == 0) * 1.5 + (country < 3) + rng.normal(0, 0.5, count)
        df = pd.DataFrame({"n0": numbers[:, 0], "merchant": pd.Categorical.from_codes(merchant, merchants),
                           "n1": numbers[:, 1], "n2": numbers[:, 2], "country": pd.Categorical.from_codes(country, countries),
                           "n3": numbers[:, 3]})
        return df, (risk > 1).astype(int)

    train, y = frame(20000)
    held, _ = frame(10000)
    codes = held.copy()
    for column in ("merchant", "country"):
        codes[column] = codes[column].cat.codes.astype(np.float32)
    codes["label"] = 0
    codes.to_csv(out / "data" / "categorical-held-out.csv", index=False)
    manifest = {"labels": ["legit", "fraud"]}
    params = {"objective": "binary:logistic", "max_depth": 6, "tree_method": "hist", "max_cat_to_onehot": 1,
              "nthread": 1, "seed": 1}
    model = xgb.train(params, xgb.DMatrix(train, label=y, enable_categorical=True), num_boost_round=200)
    save(out, "categorical-xgb", "xgboost.json", {**manifest, "format": "xgboost"}, model.save_model)
    params = {"objective": "binary", "num_leaves": 31, "num_threads": 1, "verbose": -1}
    model = lgb.train(params, lgb.Dataset(train, label=y), num_boost_round=200)
    save(out, "categorical-gbt", "lightgbm.txt", {**manifest, "format": "lightgbm"}, model.save_model)


def rows_of(name):
    return "categorical-held-out.csv" if name.startswith("categorical") else "retail-held-out.csv"


def rate(call, rows, batch, seconds):
    """Rows per second of `call(batch rows)` over about `seconds`."""
    scored, at, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if at + batch > len(rows):
            at = 0
        call(rows[at:at + batch])
        scored += batch
        at += batch
    return scored / (time.perf_counter() - start)


def library(name, out):
    if (out / "repo" / name / "1" / "lightgbm.txt").exists():
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(out / "repo" / name / "1" / "lightgbm.txt"))
        return lambda threads: (lambda x: booster.predict(x, num_threads=threads))
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(out / "repo" / name / "1" / "xgboost.json"))

    def at(threads):
        booster.set_param({"nthread": threads})
        return lambda x: booster.inplace_predict(x)

    return at


def candela_alone(name, out, threads, seconds):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), SCORER_REPEATS="1", SCORER_SECONDS=str(seconds))
    run = subprocess.run(
        ["cargo", "bench", "-q", "-p", "candela-server", "--bench", "scorer", "--",
         str(out / "repo" / name / "1"), str(out / "data" / rows_of(name)), "1", "1000"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return {json.loads(line)["batch"]: json.loads(line)["rows_per_s"] for line in run.stdout.splitlines()}


def grpc(name, url, candela, seconds):
    """Rows per second and p50 through gRPC; none for the categorical models,
    whose rows `candela bench` cannot make up (codes within each vocabulary)."""
    rates = {}
    if name.startswith("categorical"):
        return {1: (float("nan"), float("nan")), 1000: (float("nan"), float("nan"))}
    for call, rows in (("predict", 1), ("batch-predict", 1000)):
        run = subprocess.run([candela, "--server", url, "bench", "--call", call, "--rows", str(rows), "--model", name,
                              "--concurrency", "1", "--duration", str(seconds), "--warmup", "0.5", "--json"],
                             check=True, capture_output=True, text=True)
        result = json.loads(run.stdout)
        rates[rows] = (result["rows_per_second"], result["latency_us"]["p50"])
    return rates


def measure(out, url, rounds, seconds, candela):
    models = ("retail-gbt", "retail-xgb", "retail-gbt-reg", "retail-xgb-reg", "categorical-gbt", "categorical-xgb")
    results = {(m, k): [] for m in models for k in ("lib1", "lib2", "can1", "can2", "grpc")}
    for _ in range(rounds):
        for name in models:
            rows, _ = read(out / "data" / rows_of(name))
            predict = library(name, out)
            for threads in (1, 2):
                call = predict(threads)
                results[(name, f"lib{threads}")].append({b: rate(call, rows, b, seconds) for b in (1, 1000)})
                results[(name, f"can{threads}")].append(candela_alone(name, out, threads, seconds))
            results[(name, "grpc")].append(grpc(name, url, candela, seconds))
    print(f"Medians of {rounds} rounds, {seconds} s each; rows/s.")
    print()
    print("| model | rows per call | library 1 thread | Candela 1 thread | ratio | library 2 threads | Candela 2 threads | ratio | gRPC, 1 caller (p50 µs) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in models:
        for batch in (1, 1000):
            med = {k: statistics.median(r[batch] for r in results[(name, k)]) for k in ("lib1", "lib2", "can1", "can2")}
            g = results[(name, "grpc")]
            g_rate = statistics.median(r[batch][0] for r in g)
            g_p50 = statistics.median(r[batch][1] for r in g)
            print(f"| {name} | {batch} | {med['lib1']:,.0f} | {med['can1']:,.0f} | {med['can1'] / med['lib1']:.2f} | "
                  f"{med['lib2']:,.0f} | {med['can2']:,.0f} | {med['can2'] / med['lib2']:.2f} | {g_rate:,.0f} ({g_p50:.0f}) |")


if __name__ == "__main__":
    step, out = sys.argv[1], pathlib.Path(sys.argv[2])
    if step == "train":
        train(out)
    else:
        measure(out, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
