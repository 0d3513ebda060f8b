"""What the peer checks share: the answers a Rust test computed over gRPC
(candela.v1.Inference/BatchPredict) and wrote to a JSON file, and counting
checks as they pass."""

import json

import numpy as np


class Expected:
    """The expected answers: `model`, `rows` (float32 [n, features]),
    `probabilities` (float32 [n, classes]), `classes` (int64 [n]), and the
    file's other keys in `extra`."""

    def __init__(self, path):
        with open(path) as f:
            expected = json.load(f)
        self.model = expected["model"]
        self.rows = np.array(expected["rows"], dtype=np.float32)
        self.probabilities = np.array(expected["probabilities"], dtype=np.float32)
        self.classes = np.array(expected["classes"], dtype=np.int64)
        self.extra = expected
        self.checks = 0

    def check(self, condition, message):
        """Fails with `message` unless `condition`; counts the check."""
        if not condition:
            raise AssertionError(message)
        self.checks += 1
