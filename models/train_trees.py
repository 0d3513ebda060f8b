#!/usr/bin/env python3
"""Trains the demo repository's tree model, `retail-gbt` (a LightGBM binary
classifier over retail's 30 features), on the same synthetic rows the retail
network trains on, and writes models/retail-gbt/1/ (lightgbm.txt and its
model.json, with the held-out AUC, the file's SHA-256 and the training
statistics drift is measured against). Seeded and single-threaded, so running
it again reproduces the committed files:

    cargo run --release -p candela-server --features train --bin candela-train -- \\
        --segments retail --export-data /tmp/candela-data
    python3 -m pip install lightgbm==4.7.0 scikit-learn numpy
    python3 models/train_trees.py /tmp/candela-data
"""
import hashlib
import json
import pathlib
import sys

import lightgbm as lgb
import numpy as np
from sklearn.metrics import roc_auc_score

HERE = pathlib.Path(__file__).resolve().parent
SEGMENT = "retail-gbt"


def read(path):
    header = path.read_text().split("\n", 1)[0].split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return header[:-1], table[:, :-1].astype(np.float32), table[:, -1].astype(int)


def decile_edges(values):
    """The training deciles as Candela's trainer computes them (model/monitoring.rs)."""
    ordered = np.sort(values)
    edges = []
    for d in range(1, 10):
        edge = float(ordered[min(len(ordered) * d // 10, len(ordered) - 1)])
        if not edges or edges[-1] != edge:
            edges.append(edge)
    if len(edges) > 1 and edges[-1] == float(ordered[-1]):
        edges.pop()
    return edges


def histogram(values):
    values = np.asarray(values, dtype=np.float64)
    edges = decile_edges(values)
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    shares = counts / len(values)
    round6 = lambda v: float(f"{v:.6e}")
    return {"edges": [round6(e) for e in edges], "shares": [round6(s) for s in shares]}


def main(data):
    features, x, y = read(data / "retail-train.csv")
    _, x_held, y_held = read(data / "retail-held-out.csv")
    model = lgb.LGBMClassifier(n_estimators=200, num_leaves=31, learning_rate=0.05, min_child_samples=20,
                               subsample=1.0, colsample_bytree=1.0, random_state=2026, deterministic=True,
                               force_row_wise=True, n_jobs=1, verbose=-1)
    model.fit(x, y)
    auc = roc_auc_score(y_held, model.predict_proba(x_held)[:, 1])
    version = HERE / SEGMENT / "1"
    version.mkdir(parents=True, exist_ok=True)
    model.booster_.save_model(version / "lightgbm.txt")
    digest = hashlib.sha256((version / "lightgbm.txt").read_bytes()).hexdigest()
    scores = model.predict_proba(x)[:, 1]
    manifest = {
        "features": features,
        "labels": ["legit", "fraud"],
        "format": "lightgbm",
        "file": "lightgbm.txt",
        "provenance": {
            "created": "2026-12-02T00:00:00Z",
            "training_data": f"synthetic `retail` transactions from candela-train --export-data: {len(y)} training rows, {len(y_held)} held-out rows",
            "metrics": {"held_out_auc": round(float(auc), 4)},
            "notes": f"LightGBM {lgb.__version__}, 200 trees of 31 leaves, trained by models/train_trees.py",
        },
        "files": {"lightgbm.txt": digest},
        "monitoring": {
            "features": {name: histogram(x[:, i]) for i, name in enumerate(features)},
            "score": histogram(scores),
        },
    }
    (version / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{SEGMENT}: held-out AUC {auc:.4f} -> {version}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(pathlib.Path(sys.argv[1]))
