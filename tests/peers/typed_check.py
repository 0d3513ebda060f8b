"""Named, typed inputs from real clients: models converted by skl2onnx from a
DataFrame of numbers and string categories (tests/fixtures/formats/repo,
made by make_fixtures.py `dataframe_models`) called the way Triton's ONNX
Runtime backend takes the same graphs, one tensor per input (FP32 numbers,
BYTES strings, [batch, 1]), through Triton's gRPC and HTTP clients, and
through HTTP /score with rows as objects keyed by feature name (Python
requests). The answers must be within 1e-5 of onnxruntime's (expected.json
beside each model); unknown categories are scored as the model's encoder
says (ignored: all zeros) or refused naming the field (handle_unknown='error').
The boosters with categorical features (LightGBM, XGBoost) are called the same
way, against their library's own predict_proba.

Run by tests/typed_inputs.rs, which starts the server on the fixtures:

    python tests/peers/typed_check.py GRPC_HOST:PORT HTTP_HOST:PORT FIXTURES_DIR

Exits non-zero at the first check that fails; prints how many checks passed.
"""

import json
import math
import pathlib
import sys

import numpy as np
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

grpc_address, http_address, fixtures = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
checks = 0


def check(condition, message):
    global checks
    if not condition:
        raise AssertionError(message)
    checks += 1


def expected(model):
    data = json.loads((fixtures / model / "expected.json").read_text())
    return data["columns"], np.array(data["probabilities"], dtype=np.float64)


def tensors(module, columns, rows=slice(None)):
    """One input per column: strings as BYTES, numbers as FP32 (null: NaN)."""
    inputs = []
    for name, values in columns.items():
        values = values[rows]
        if any(isinstance(v, str) for v in values):
            array = np.array([[v.encode()] for v in values], dtype=np.object_)
            tensor = module.InferInput(name, list(array.shape), "BYTES")
        else:
            array = np.array([[math.nan if v is None else v] for v in values], dtype=np.float32)
            tensor = module.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def close(got, want, label):
    got = np.asarray(got, dtype=np.float64)
    check(got.shape == want.shape, f"{label}: shape {got.shape}, want {want.shape}")
    worst = float(np.max(np.abs(got - want)))
    check(worst <= 1e-5, f"{label}: differs from onnxruntime by {worst}")
    return worst


grpc = grpcclient.InferenceServerClient(url=grpc_address)
http = httpclient.InferenceServerClient(url=http_address)
for model in ["onnx-dataframe", "onnx-dataframe-boosting", "onnx-dataframe-strict"]:
    columns, want = expected(model)
    metadata = http.get_model_metadata(model)
    listed = {i["name"]: (i["datatype"], i["shape"]) for i in metadata["inputs"]}
    check(listed == {"amount": ("FP32", [-1, 1]), "country": ("BYTES", [-1, 1]), "age": ("FP32", [-1, 1]),
                     "channel": ("BYTES", [-1, 1])}, f"{model}: HTTP metadata inputs {listed}")
    grpc_listed = [(i.name, i.datatype) for i in grpc.get_model_metadata(model).inputs]
    check(grpc_listed == [("amount", "FP32"), ("country", "BYTES"), ("age", "FP32"), ("channel", "BYTES")],
          f"{model}: gRPC metadata inputs {grpc_listed}")
    worst = close(grpc.infer(model, tensors(grpcclient, columns)).as_numpy("probabilities"), want, f"{model} gRPC")
    close(http.infer(model, tensors(httpclient, columns)).as_numpy("probabilities"), want, f"{model} HTTP")
    rows = [{name: values[r] for name, values in columns.items()} for r in range(len(want))]
    answer = requests.post(f"http://{http_address}/score", json={"segment": model, "features": rows}, timeout=20)
    check(answer.status_code == 200, f"{model} /score: {answer.status_code} {answer.text}")
    close(answer.json()["probability"], want, f"{model} /score")
    print(f"{model}: {len(want)} rows over gRPC, HTTP and /score, largest |Δp| {worst:.2e}")

# Boosters with categorical features (make_fixtures.py `categorical_models`): the same clients, an input
# per feature, over the rows with every category present (a BYTES element cannot be null); /score with all
# rows, null for a missing category.
for model in ["lightgbm-categorical", "xgboost-categorical"]:
    columns, want = expected(model)
    listed = [(i["name"], i["datatype"]) for i in http.get_model_metadata(model)["inputs"]]
    check(listed == [("amount", "FP32"), ("merchant", "BYTES"), ("hour", "FP32"), ("country", "BYTES")],
          f"{model}: HTTP metadata inputs {listed}")
    full = [r for r in range(len(want)) if columns["merchant"][r] is not None and columns["country"][r] is not None]
    present = {name: [values[r] for r in full] for name, values in columns.items()}
    worst = close(grpc.infer(model, tensors(grpcclient, present)).as_numpy("probabilities"), want[full],
                  f"{model} gRPC")
    close(http.infer(model, tensors(httpclient, present)).as_numpy("probabilities"), want[full], f"{model} HTTP")
    rows = [{name: values[r] for name, values in columns.items()} for r in range(len(want))]
    answer = requests.post(f"http://{http_address}/score", json={"segment": model, "features": rows}, timeout=20)
    check(answer.status_code == 200, f"{model} /score: {answer.status_code} {answer.text}")
    close(answer.json()["probability"], want, f"{model} /score")
    print(f"{model}: {len(full)} rows over gRPC and HTTP, {len(want)} over /score, largest |Δp| {worst:.2e}")

# Binary tensor data over HTTP (BYTES elements length-prefixed, as Triton writes them).
columns, want = expected("onnx-dataframe")
inputs = tensors(httpclient, columns, slice(0, 5))
for tensor, values in zip(inputs, columns.values()):
    if isinstance(values[0], str):
        tensor.set_data_from_numpy(np.array([[v.encode()] for v in values[:5]], dtype=np.object_), binary_data=True)
    else:
        data = np.array([[math.nan if v is None else v] for v in values[:5]], dtype=np.float32)
        tensor.set_data_from_numpy(data, binary_data=True)
close(http.infer("onnx-dataframe", inputs).as_numpy("probabilities"), want[:5], "binary HTTP tensors")

# Unknown categories: ignored by onnx-dataframe's encoder (the rows above hold some), refused by the strict one.
strict_columns, _ = expected("onnx-dataframe-strict")
unknown = {name: values[:2] for name, values in strict_columns.items()}
unknown["country"] = ["fr", "atlantis"]
try:
    grpc.infer("onnx-dataframe-strict", tensors(grpcclient, unknown))
    check(False, "an unknown category was scored by a model whose encoder refuses it")
except InferenceServerException as error:
    message = str(error)
    check("the unknown category `atlantis`" in message and "handle_unknown='error'" in message, message)
rows = [{name: values[r] for name, values in unknown.items()} for r in range(2)]
answer = requests.post(f"http://{http_address}/score", json={"segment": "onnx-dataframe-strict", "features": rows},
                       timeout=20)
check(answer.status_code == 400 and "features[1].country" in answer.text, f"/score unknown: {answer.text}")
ignored = {name: values[:1] for name, values in strict_columns.items()}
ignored["country"] = [None]
answer = requests.post(f"http://{http_address}/score",
                       json={"segment": "onnx-dataframe", "features": [{k: v[0] for k, v in ignored.items()}]},
                       timeout=20)
check(answer.status_code == 200, f"/score with a missing category: {answer.text}")

# A number where a category goes, a missing input, a string where a number goes.
wrong = dict(unknown)
wrong["country"] = [1.0, 2.0]
try:
    grpc.infer("onnx-dataframe", tensors(grpcclient, wrong))
    check(False, "a number was taken for a category")
except InferenceServerException as error:
    check("feature `country` is a category" in str(error), str(error))
try:
    grpc.infer("onnx-dataframe", tensors(grpcclient, {k: v for k, v in unknown.items() if k != "age"}))
    check(False, "a request without `age` was scored")
except InferenceServerException as error:
    check("has 3 tensors" in str(error) and "age FP32" in str(error), str(error))
answer = requests.post(f"http://{http_address}/score",
                       json={"segment": "onnx-dataframe", "features": [{**rows[0], "age": "old"}]}, timeout=20)
check(answer.status_code == 400 and "feature `age` takes numbers" in answer.text, f"/score string age: {answer.text}")
print(f"{checks} checks passed")
