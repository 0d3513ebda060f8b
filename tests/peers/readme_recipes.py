"""Runs the README's export recipes as a reader would paste them: every
```python block of README.md's "Serving your model" whose first line is
`# recipe: …`, each on its own (a fresh namespace holding only the data the
README says it assumes: `X` float32 rows with missing values, `y` labels,
`frame` a DataFrame of numbers and string categories), in DIR. Each recipe
writes a model version under DIR/models; then onnxruntime scores held-out
rows with every model written, and DIR/expected.json records, per segment,
the rows (or, for a model with an input per column, the columns) and
onnxruntime's probabilities, for tests/readme_recipes.rs to compare with
Candela's answers.

    python tests/peers/readme_recipes.py README.md DIR
"""

import json
import math
import os
import pathlib
import re
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd

readme, out = pathlib.Path(sys.argv[1]).resolve(), pathlib.Path(sys.argv[2])
section = readme.read_text().split("## Serving your model", 1)[1].split("\n## ", 1)[0]
recipes = [block for block in re.findall(r"```python\n(.*?)```", section, re.S) if block.startswith("# recipe:")]
assert len(recipes) >= 5, f"the README's Serving your model section has {len(recipes)} recipes"

rng = np.random.default_rng(7)


def data(count):
    """Rows of 6 numeric features with some missing, and a DataFrame of 2
    numbers and 2 string categories, with labels depending on both."""
    x = rng.normal(size=(count, 6)).astype(np.float32)
    score = x[:, 0] - 0.5 * x[:, 1] + 0.3 * x[:, 2] * x[:, 3] + 0.3 * rng.normal(size=count)
    x[rng.random(x.shape) < 0.05] = np.nan
    country = rng.choice(["de", "fr", "us"], size=count)
    channel = rng.choice(["web", "pos"], size=count)
    frame = pd.DataFrame({"amount": x[:, 0] * 10 + 50, "country": country, "age": x[:, 1] * 10 + 40, "channel": channel})
    frame["amount"] = frame["amount"].astype(np.float32)
    frame["age"] = frame["age"].astype(np.float32)
    y = (score + (country == "us") > 0.3).astype(int)
    return x, y, frame


X, y, frame = data(2000)
test_x, _, test_frame = data(50)
os.chdir(out)
for recipe in recipes:
    exec(compile(recipe, recipe.splitlines()[0], "exec"), {"X": X, "y": y, "frame": frame})

expected = {}
for version in sorted((out / "models").glob("*/1")):
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) == 1:
        feeds, record = {inputs[0].name: test_x}, {"rows": [[None if math.isnan(v) else float(v) for v in row] for row in test_x]}
    else:
        feeds = {i.name: test_frame[[i.name]].to_numpy().astype(str if i.type == "tensor(string)" else np.float32)
                 for i in inputs}
        missing = lambda v: None if isinstance(v, float) and math.isnan(v) else v
        record = {"columns": {c: [missing(v) for v in test_frame[c].tolist()] for c in test_frame.columns}}
    name = next(o.name for o in session.get_outputs() if "prob" in o.name)
    # One row per call: an INT8 graph's quantization spans the rows sent together, and
    # Candela answers each row as onnxruntime answers it alone.
    p = []
    for r in range(len(test_x)):
        answer = session.run([name], {k: v[r:r + 1] for k, v in feeds.items()})[0]
        p.append([answer[0][k] for k in sorted(answer[0])] if isinstance(answer, list) else answer[0])
    record["probabilities"] = np.asarray(p, dtype=np.float64).tolist()
    expected[version.parent.name] = record
(out / "expected.json").write_text(json.dumps(expected, allow_nan=False))
print(f"{len(recipes)} recipes wrote {sorted(expected)}")
