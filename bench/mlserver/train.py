"""The Python peer's model: a scikit-learn MLP of the demo model's shape
(30 features -> 32 -> 16 -> 2 classes, ReLU), trained on seeded synthetic rows,
saved as MLServer's SKLearn runtime loads it, beside its model-settings.json.

Usage: python train.py OUT_DIR
"""

import json
import pathlib
import sys

import warnings

import joblib
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

FEATURES = 30


def main(out: pathlib.Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, FEATURES)).astype(np.float32)
    y = (x[:, :5].sum(axis=1) + 0.5 * rng.normal(size=4000) > 0).astype(np.int64)
    model = MLPClassifier(hidden_layer_sizes=(32, 16), activation="relu", max_iter=200, random_state=7)
    # Speed, not accuracy, is what this model is for: 200 epochs are plenty.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    model_dir = out / "retail"
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    settings = {
        "name": "retail",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1"},
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]}],
    }
    (model_dir / "model-settings.json").write_text(json.dumps(settings, indent=2))
    print(f"trained: accuracy on its training rows {model.score(x, y):.3f}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
