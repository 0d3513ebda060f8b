"""ONNX models scored by Candela's compiled form and by onnxruntime's own
session, on the same rows, for bench/onnx.sh: per fixture model (a network
in f32 and the same network INT8 from quantize_dynamic; scikit-learn
pipelines with preprocessing before a tree ensemble, and the same ensemble
bare, cut out of the pipeline's graph and fed
the preprocessed rows), the median over rounds of rows per second at 1 and
at 1,000 rows per call, interleaved: Candela's `Scorer::forward`
(server/benches/scorer.rs) and `InferenceSession.run`, both on the same
thread count. Prints a table of medians and the per-row cost in µs.

Usage: python bench/onnx_models.py OUT_DIR ROUNDS SECONDS THREADS
(MODELS=a,b,…: only those.)
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys

import numpy as np
import onnx
import onnx.helper
import onnxruntime as ort
from trees import rate  # the same timing loop as bench/trees.sh

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "formats" / "repo"
MODELS = os.environ.get("MODELS", "").split(",") if os.environ.get("MODELS") else ["sklearn-multi", "onnx-int8-multi", "onnx-forest", "onnx-forest:bare", "onnx-lightgbm-pipeline",
          "onnx-lightgbm-pipeline:bare", "onnx-hist-boosting"]


def cut(model, first, last, width, path):
    """`model` from value `first` (float rows of `width`) to value `last` (a
    float tensor), keeping only the nodes between, saved to `path`."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    needed, stack = [], [last]
    while stack:
        value = stack.pop()
        node = producer.get(value)
        if value != first and node is not None and node not in needed:
            needed.append(node)
            stack.extend(node.input)
    nodes = [n for n in graph.node if n in needed]
    new = onnx.helper.make_graph(
        nodes, graph.name, [onnx.helper.make_tensor_value_info(first, onnx.TensorProto.FLOAT, [None, width])],
        [onnx.helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, None)], list(graph.initializer))
    onnx.save(onnx.helper.make_model(new, opset_imports=model.opset_import, ir_version=model.ir_version), str(path))


def prepare(name, out):
    """The model's version directory and its rows (a CSV for Candela, an
    array for onnxruntime): the fixture's rows repeated to 2,000; a `:bare`
    model is the pipeline's tree ensemble alone, fed the pipeline's
    preprocessed rows."""
    base = name.split(":")[0]
    rows = np.array(json.loads((FIXTURES / base / "expected.json").read_text())["rows"], dtype=np.float64)
    rows = rows.astype(np.float32)
    rows = np.resize(rows, (2000, rows.shape[1]))
    source = FIXTURES / base / "1"
    graph = onnx.load(str(source / "model.onnx"))
    # The probabilities as a tensor (before a ZipMap), for both runtimes alike.
    zipmap = [n for n in graph.graph.node if n.op_type == "ZipMap"]
    probabilities = zipmap[0].input[0] if zipmap else next(o.name for o in graph.graph.output if "prob" in o.name)
    first = graph.graph.input[0].name
    version = out / name.replace(":", "-") / "1"
    version.mkdir(parents=True, exist_ok=True)
    if name.endswith(":bare"):
        # The pipeline's tree ensemble alone, fed the pipeline's preprocessed rows.
        trees = next(n for n in graph.graph.node if n.op_type == "TreeEnsembleClassifier")
        prep = version / "prep.onnx"
        cut(graph, first, trees.input[0], rows.shape[1], prep)
        rows = ort.InferenceSession(str(prep), providers=["CPUExecutionProvider"]).run(None, {first: rows})[0]
        prep.unlink()
        first = trees.input[0]
    cut(graph, first, probabilities, rows.shape[1], version / "model.onnx")
    manifest = json.loads((source / "model.json").read_text())
    (version / "model.json").write_text(json.dumps({k: manifest[k] for k in ("features", "labels", "format")}))
    csv = out / (name.replace(":", "-") + ".csv")
    width = rows.shape[1]
    lines = [",".join(f"f{i}" for i in range(width))]
    lines += [",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in rows]
    csv.write_text("\n".join(lines) + "\n")
    return version, rows, csv


def candela(version, csv, threads, seconds):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), SCORER_REPEATS="1", SCORER_SECONDS=str(seconds))
    run = subprocess.run(
        ["cargo", "bench", "-q", "-p", "candela-server", "--bench", "scorer", "--", str(version), str(csv), "1", "1000"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return {json.loads(line)["batch"]: json.loads(line)["rows_per_s"] for line in run.stdout.splitlines()}


def onnxruntime(version, rows, threads, seconds):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(version / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    call = lambda x: session.run(None, {name: x})
    return {batch: rate(call, rows, batch, seconds) for batch in (1, 1000)}


def main(out, rounds, seconds, threads):
    out = pathlib.Path(out)
    prepared = {name: prepare(name, out) for name in MODELS}
    results = {(name, who): [] for name in MODELS for who in ("candela", "ort")}
    for _ in range(rounds):
        for name, (version, rows, csv) in prepared.items():
            results[(name, "candela")].append(candela(version, csv, threads, seconds))
            results[(name, "ort")].append(onnxruntime(version, rows, threads, seconds))
    print(f"onnxruntime {ort.__version__}; {threads} thread(s); medians of {rounds} rounds of {seconds} s")
    print("| model | rows/call | Candela µs/row | onnxruntime µs/row | onnxruntime / Candela |")
    print("| --- | --- | --- | --- | --- |")
    for name in MODELS:
        for batch in (1, 1000):
            can = statistics.median(r[batch] for r in results[(name, "candela")])
            lib = statistics.median(r[batch] for r in results[(name, "ort")])
            print(f"| {name} | {batch} | {1e6 / can:.2f} | {1e6 / lib:.2f} | {can / lib:.2f}× |")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
