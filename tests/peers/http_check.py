"""Real HTTP clients against a running Candela server's HTTP port: Triton's own
HTTP client (tritonclient.http) and Python requests, the way teams call a
scoring endpoint today.

Run by tests/http.rs (which starts the server and writes the expected answers,
computed through candela.v1.Inference/BatchPredict over gRPC, to a JSON file):

    python tests/peers/http_check.py HOST:PORT expected.json

Exits non-zero at the first check that fails; prints how many checks passed.
"""

import json
import sys

import numpy as np
import requests
import tritonclient.http as httpclient
from expected import Expected
from tritonclient.utils import InferenceServerException

address, expected_path = sys.argv[1], sys.argv[2]
base = f"http://{address}"

expected = Expected(expected_path)
model, rows, check = expected.model, expected.rows, expected.check
want_probabilities, want_classes = expected.probabilities, expected.classes
feature_names, labels = expected.extra["features"], expected.extra["labels"]
n, width = rows.shape


def close(probabilities, label, tolerance=1e-6):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    check(probabilities.shape == want_probabilities.shape, f"{label}: probabilities shape {probabilities.shape}")
    worst = float(np.max(np.abs(probabilities - want_probabilities)))
    check(worst <= tolerance, f"{label}: probabilities differ from gRPC's by {worst}")


# --- tritonclient.http: metadata, readiness, configuration -------------------
client = httpclient.InferenceServerClient(url=address)
check(client.is_server_live(), "server is not live")
check(client.is_server_ready(), "server is not ready")
check(client.is_model_ready(model), f"{model} is not ready")
check(client.is_model_ready(model, "1"), f"{model} version 1 is not ready")
check(not client.is_model_ready("no-such-model"), "an unknown model is ready")
server = client.get_server_metadata()
check(server["name"] == "candela", f"server metadata {server}")
check({"classification", "binary_tensor_data"} <= set(server["extensions"]), f"extensions {server['extensions']}")
metadata = client.get_model_metadata(model)
check(metadata["name"] == model and "1" in metadata["versions"], f"model metadata {metadata}")
# The matrix input lists its columns' features (parameters), so a caller with curl alone can build a row.
check(metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, width],
                              "parameters": {"features": expected.extra["features"]}}], f"inputs {metadata['inputs']}")
check([o["name"] for o in metadata["outputs"]] == ["probabilities", "prediction"], f"outputs {metadata['outputs']}")
config = client.get_model_config(model)
check(config["input"][0]["dims"] == [width] and config["input"][0]["data_type"] == "TYPE_FP32", f"config {config}")
try:
    client.get_model_metadata("no-such-model")
    check(False, "metadata of an unknown model")
except InferenceServerException as error:
    check(error.status() == "404", f"unknown model: status {error.status()}")


# --- tritonclient.http: inference, JSON and binary ---------------------------
def features(array, datatype="FP32", binary=True):
    tensor = httpclient.InferInput("features", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def check_result(result, label):
    close(result.as_numpy("probabilities"), label)
    prediction = result.as_numpy("prediction")
    check(prediction.shape == (n, 1), f"{label}: prediction shape {prediction.shape}")
    check(np.array_equal(prediction[:, 0], want_classes), f"{label}: predictions differ from gRPC's")


for binary_in in (False, True):
    for binary_out in (False, True):
        outputs = [httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in ("probabilities", "prediction")]
        result = client.infer(model, [features(rows, binary=binary_in)], outputs=outputs, request_id="r1")
        check_result(result, f"infer (binary in: {binary_in}, out: {binary_out})")
        check(result.get_response()["id"] == "r1", "the request id comes back")
# No outputs named: all of them, as binary data (the client asks for it).
check_result(client.infer(model, [features(rows)]), "infer, outputs unnamed")
check_result(client.infer(model, [features(rows.astype(np.float64), "FP64")]), "infer FP64 binary")
check_result(client.infer(model, [features(rows.astype(np.float64), "FP64", binary=False)]), "infer FP64 JSON")
check_result(client.infer(model, [features(rows)], model_version="1"), "infer version 1")

# Classification: the top class of each row, "<probability>:<index>:<label>".
for binary_out in (False, True):
    result = client.infer(
        model,
        [features(rows)],
        outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary_out, class_count=2)],
    )
    top = result.as_numpy("probabilities")
    check(top.shape == (n, 2), f"classification shape {top.shape}")
    for row, (first, second) in enumerate(top):
        first = first.decode() if isinstance(first, bytes) else first
        probability, index, label = first.split(":")
        check(int(index) == want_classes[row], f"row {row}: top class {index}")
        check(label == labels[int(index)], f"row {row}: label {label}")
        check(abs(float(probability) - want_probabilities[row, int(index)]) <= 1e-6, f"row {row}: {probability}")

# By hand: named outputs without their own binary_data follow binary_data_output.
infer_body = {
    "inputs": [{"name": "features", "shape": [n, width], "datatype": "FP32", "data": rows.tolist()}],
    "outputs": [{"name": "prediction"}],
    "parameters": {"binary_data_output": True},
}
answer = requests.post(f"{base}/v2/models/{model}/infer", json=infer_body, timeout=10)
check(answer.status_code == 200, f"binary_data_output: {answer.status_code} {answer.text[:200]}")
length = int(answer.headers["inference-header-content-length"])
head = json.loads(answer.content[:length])
size = head["outputs"][0]["parameters"]["binary_data_size"]
check(size == n * 8 and len(answer.content) == length + size, f"binary part of {size} bytes")
check(np.array_equal(np.frombuffer(answer.content[length:], dtype="<i8"), want_classes), "binary predictions")

# A refused inference: the status and the message gRPC's BadRequest carries.
try:
    client.infer(model, [features(rows[:, :-1])])
    check(False, "a tensor of the wrong width was scored")
except InferenceServerException as error:
    check(error.status() == "400", f"wrong width: status {error.status()}")
    check("inputs[0].shape" in error.message(), f"wrong width: {error.message()}")


# --- requests: the /score contract -------------------------------------------
def score(body, headers=None):
    return requests.post(f"{base}/score", json=body, headers=headers or {}, timeout=10)


answer = score({"segment": model, "features": rows.tolist()}, {"x-request-id": "batch-7"})
check(answer.status_code == 200, f"/score: {answer.status_code} {answer.text}")
check(answer.headers["content-type"] == "application/json", f"content type {answer.headers['content-type']}")
body = answer.json()
check(list(body) == ["prediction", "labels", "probability", "segment", "version", "request_id"], f"keys {list(body)}")
check(body["prediction"] == want_classes.tolist(), "/score predictions differ from gRPC's")
check(body["labels"] == labels, f"labels {body['labels']}")
close(body["probability"], "/score")
check(body["segment"] == model and body["version"] == 1, f"segment/version {body['segment']} {body['version']}")
check(body["request_id"] == "batch-7" and answer.headers["x-request-id"] == "batch-7", "the caller's request id")

named = [dict(zip(feature_names, (float(v) for v in row))) for row in rows]
body = score({"segment": model, "version": 1, "features": named}).json()
close(body["probability"], "/score, rows by feature name")
body = score({"segment": model, "features": [list(map(float, named[0].values()))]}).json()
check(len(body["probability"]) == 1 and len(body["probability"][0]) == len(labels), "one row, one answer")
check(len(body["request_id"]) == 36, f"a generated request id {body['request_id']}")

# Each error: its status, and a JSON body naming the field.
def refused(body, status, field, raw=None):
    answer = requests.post(f"{base}/score", data=raw, timeout=10) if raw is not None else score(body)
    check(answer.status_code == status, f"{body or raw!r}: {answer.status_code} {answer.text}")
    error = answer.json()
    check(isinstance(error["error"], str) and error["error"], f"an error message: {error}")
    if field is not None:
        check(error["violations"][0]["field"] == field, f"{body or raw!r}: violations {error.get('violations')}")


refused({"segment": model, "features": [rows[0].tolist()[:-1]]}, 400, "features[0]")
refused({"segment": model, "features": [["a"] * width]}, 400, "features[0][0]")
refused({"segment": model, "featurs": []}, 400, "featurs")
refused({"segment": model, "features": [{"no-such-feature": 1.0}]}, 400, "features[0].no-such-feature")
refused({"segment": model, "features": [dict(list(named[0].items())[1:])]}, 400, f"features[0].{feature_names[0]}")
refused({"segment": model, "features": [[1e39] * width]}, 400, None)
refused(None, 400, "(body)", raw=b"{not json")
refused({"segment": "no-such-segment", "features": [rows[0].tolist()]}, 404, None)
refused({"segment": model, "version": 99, "features": [rows[0].tolist()]}, 404, None)

# --- requests: outcomes back -------------------------------------------------
outcomes = [{"request_id": "batch-7", "row": i, "label": labels[int(c)]} for i, c in enumerate(want_classes)]
outcomes += [{"request_id": "never-seen", "row": 0, "label": labels[0]}]
fed = requests.post(f"{base}/feedback", json={"outcomes": outcomes}, timeout=10)
check(fed.status_code == 200, f"/feedback: {fed.status_code} {fed.text}")
check(fed.json() == {"matched": n, "unknown_request": 1, "row_out_of_range": 0, "unknown_label": 0, "duplicate": 0}, f"feedback {fed.json()}")

print(f"http_check: {expected.checks} checks passed")
