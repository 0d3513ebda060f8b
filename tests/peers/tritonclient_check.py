"""Triton's own Python gRPC client against a running Candela server.

Run by tests/open_inference_peers.rs (which starts the server and writes the expected
answers, computed through candela.v1.Inference/BatchPredict, to a JSON file):

    python tests/peers/tritonclient_check.py HOST:PORT expected.json

Exits non-zero at the first check that fails.
"""

import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from expected import Expected
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

url, expected_path = sys.argv[1], sys.argv[2]


expected = Expected(expected_path)
model, rows, check = expected.model, expected.rows, expected.check
want_probabilities, want_classes = expected.probabilities, expected.classes
n, features = rows.shape


def check_result(result, label, tolerance=1e-6):
    probabilities = result.as_numpy("probabilities")
    prediction = result.as_numpy("prediction")
    check(probabilities.shape == want_probabilities.shape, f"{label}: probabilities shape {probabilities.shape}")
    worst = float(np.max(np.abs(probabilities - want_probabilities)))
    check(worst <= tolerance, f"{label}: probabilities differ from BatchPredict by {worst}")
    check(prediction.shape == (n, 1), f"{label}: prediction shape {prediction.shape}")
    check(np.array_equal(prediction[:, 0], want_classes), f"{label}: predictions differ from BatchPredict")


def features_input(array, datatype="FP32"):
    tensor = grpcclient.InferInput("features", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


client = grpcclient.InferenceServerClient(url=url)

check(client.is_server_live(), "server is not live")
check(client.is_server_ready(), "server is not ready")
check(client.is_model_ready(model), f"{model} is not ready")

metadata = client.get_server_metadata()
check(metadata.name == "candela", f"server name {metadata.name}")
check({"classification", "model_configuration", "model_repository", "statistics"} <= set(metadata.extensions),
      f"extensions {metadata.extensions}")

model_metadata = client.get_model_metadata(model)
check(model_metadata.platform == "candela", f"platform {model_metadata.platform}")
check("1" in model_metadata.versions, f"versions {model_metadata.versions}")
check([(i.name, i.datatype, list(i.shape)) for i in model_metadata.inputs] == [("features", "FP32", [-1, features])],
      f"inputs {model_metadata.inputs}")
check([(o.name, o.datatype) for o in model_metadata.outputs] == [("probabilities", "FP32"), ("prediction", "INT64")],
      f"outputs {model_metadata.outputs}")

config = client.get_model_config(model).config
check(config.max_batch_size >= 16, f"max_batch_size {config.max_batch_size}")
check(config.input[0].name == "features" and list(config.input[0].dims) == [features], f"config input {config.input}")
check([o.name for o in config.output] == ["probabilities", "prediction"], f"config outputs {config.output}")

# Binary (raw) FP32, as tritonclient sends numpy arrays.
result = client.infer(model, [features_input(rows)], request_id="raw-1")
check(result.get_response().id == "raw-1", "request id not echoed")
check_result(result, "raw FP32")

# Typed FP32 contents, through Triton's own generated protobuf types and stub.
request = service_pb2.ModelInferRequest(model_name=model, id="typed-1")
typed = request.inputs.add(name="features", datatype="FP32", shape=[n, features])
typed.contents.fp32_contents.extend(rows.flatten().tolist())
response = client._client_stub.ModelInfer(request)
check(len(response.raw_output_contents) == 0, "typed request answered raw")
typed_probabilities = np.array(response.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(n, -1)
check(float(np.max(np.abs(typed_probabilities - want_probabilities))) <= 1e-6, "typed FP32 probabilities differ")
check(list(response.outputs[1].contents.int64_contents) == want_classes.tolist(), "typed FP32 predictions differ")

# FP64 converts exactly (these values are f32 already); FP16 within half precision.
check_result(client.infer(model, [features_input(rows.astype(np.float64), "FP64")]), "raw FP64")
half = client.infer(model, [features_input(rows.astype(np.float16), "FP16")]).as_numpy("probabilities")
check(float(np.max(np.abs(half - want_probabilities))) < 0.05, "FP16 probabilities far from FP32")

# Requested outputs are honoured.
only = client.infer(model, [features_input(rows)], outputs=[grpcclient.InferRequestedOutput("prediction")])
check(only.as_numpy("probabilities") is None, "an output that was not requested came back")
check(np.array_equal(only.as_numpy("prediction")[:, 0], want_classes), "prediction-only differs")

# The classification extension: the top classes as "<probability>:<index>:<label>",
# most probable first, raw (as tritonclient asks) and typed.
top = client.infer(model, [features_input(rows)], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=2)])
top = top.as_numpy("probabilities")
check(top.shape == (n, 2), f"classification shape {top.shape}")
for row, (first, second) in enumerate(top):
    value, index, label = first.decode().split(":")
    check(int(index) == want_classes[row], f"row {row}: top class {index}, want {want_classes[row]}")
    check(abs(float(value) - want_probabilities[row][int(index)]) <= 1e-6, f"row {row}: top probability {value}")
    check(label in ("legit", "fraud"), f"row {row}: label {label}")
    check(float(second.decode().split(":")[0]) <= float(value), f"row {row}: not in descending order")
request = service_pb2.ModelInferRequest(model_name=model)
typed = request.inputs.add(name="features", datatype="FP32", shape=[n, features])
typed.contents.fp32_contents.extend(rows.flatten().tolist())
wanted = request.outputs.add(name="probabilities")
wanted.parameters["classification"].int64_param = 1
response = client._client_stub.ModelInfer(request)
check(response.outputs[0].datatype == "BYTES" and list(response.outputs[0].shape) == [n, 1], f"typed classification {response.outputs[0]}")
check([int(b.decode().split(":")[1]) for b in response.outputs[0].contents.bytes_contents] == want_classes.tolist(),
      "typed classification indices differ")

# async_infer.
done = queue.Queue()
client.async_infer(model, [features_input(rows)], callback=lambda result, error: done.put((result, error)))
result, error = done.get(timeout=30)
check(error is None, f"async_infer failed: {error}")
check_result(result, "async_infer")

# Errors carry the gRPC code and say what to fix.
try:
    client.infer(model, [features_input(rows[:, :-1])])
    check(False, "a 29-column input was accepted")
except InferenceServerException as e:
    check("INVALID_ARGUMENT" in str(e.status()), f"wrong-shape status {e.status()}")
    check("expects 30 features" in e.message(), f"wrong-shape message {e.message()}")
try:
    client.infer("nowhere", [features_input(rows)])
    check(False, "an unknown model was accepted")
except InferenceServerException as e:
    check("NOT_FOUND" in str(e.status()), f"unknown-model status {e.status()}")

# Streaming, with a bad request in the middle: it gets an error, the stream carries on.
answers = queue.Queue()
client.start_stream(callback=lambda result, error: answers.put((result, error)))
client.async_stream_infer(model, [features_input(rows)], request_id="s1")
client.async_stream_infer(model, [features_input(rows[:, :-1])], request_id="s2")
client.async_stream_infer(model, [features_input(rows)], request_id="s3")
streamed = [answers.get(timeout=30) for _ in range(3)]
client.stop_stream()
check(streamed[0][1] is None and streamed[2][1] is None, f"good stream requests failed: {streamed}")
check(streamed[0][0].get_response().id == "s1" and streamed[2][0].get_response().id == "s3", "stream ids")
check_result(streamed[0][0], "stream s1")
check_result(streamed[2][0], "stream s3")
check(streamed[1][1] is not None and "expects 30 features" in str(streamed[1][1]), f"bad stream request: {streamed[1]}")

# Statistics count what this script did.
stats = client.get_inference_statistics(model).model_stats[0]
check(stats.name == model, f"stats for {stats.name}")
check(stats.inference_stats.success.count >= 9, f"success count {stats.inference_stats.success.count}")
check(stats.inference_stats.fail.count >= 2, f"fail count {stats.inference_stats.fail.count}")
check(stats.inference_count >= 9 * n, f"inference_count {stats.inference_count}")
check(stats.inference_stats.compute_infer.ns > 0, "no compute time recorded")
check(any(b.batch_size == n for b in stats.batch_stats), f"no batch stats for batch size {n}")

# Repository control (EXPLICIT-mode semantics), with the admin key the test passed.
admin = {"authorization": f"Bearer {expected.extra['admin_key']}"}
index = client.get_model_repository_index().models
check(any(m.name == model and m.state == "READY" for m in index), f"repository index {index}")
try:
    client.unload_model(model)
    check(False, "unload without an admin key succeeded")
except InferenceServerException as error:
    check("admin" in str(error), f"unload without a key: {error}")
client.unload_model(model, headers=admin)
check(not client.is_model_ready(model), "an unloaded model is still ready")
index = {(m.name, m.state) for m in client.get_model_repository_index().models}
check((model, "UNAVAILABLE") in index, f"index after unload {index}")
client.load_model(model, headers=admin)
check(client.is_model_ready(model), f"{model} is not ready after load")
check_result(client.infer(model, [features_input(rows)]), "infer after reload")

print(f"tritonclient: {expected.checks} checks passed")
