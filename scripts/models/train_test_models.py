#!/usr/bin/env python3
"""Train small scikit-learn models and export them to ONNX test fixtures.

Usage: python3 scripts/models/train_test_models.py [OUT_DIR]   (default: tests/models)

Deterministic: every estimator and the train/test split use a fixed random_state.
For each model this writes <name>.onnx and <name>.rows.json (held-out rows, values
exactly representable as f32). Pinned versions: scripts/models/requirements.txt.
"""

import json
import os
import sys
import time

import numpy as np
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
SEED = 0


def split(loader):
    x, y = loader(return_X_y=True)
    x = x.astype(np.float32)
    return train_test_split(x, y, test_size=0.25, random_state=SEED)


def normalize_opset_imports(model):
    """Deduplicate and sort opset_import (one entry per domain, highest version).

    skl2onnx builds this list from a set, so its order changes with Python's hash
    seed (and it can list a domain twice); sorting makes the output byte-identical
    across runs. The versions are skl2onnx's choice: the lowest opset each model
    needs, capped by TARGET_OPSET.
    """
    versions = {}
    for imp in model.opset_import:
        versions[imp.domain] = max(versions.get(imp.domain, 0), imp.version)
    del model.opset_import[:]
    for domain in sorted(versions):
        model.opset_import.add(domain=domain, version=versions[domain])


def models():
    """Yield (name, fitted estimator, held-out X, converter options)."""
    # 'div': 'div' makes StandardScaler export as Sub/Div instead of ai.onnx.ml:Scaler
    # (tract does not implement Scaler).
    x_tr, x_te, y_tr, _ = split(load_breast_cancer)
    logreg = Pipeline([
        ("scaler", StandardScaler()),
        ("clf", LogisticRegression(max_iter=1000, random_state=SEED)),
    ]).fit(x_tr, y_tr)
    yield "logreg", logreg, x_te, {StandardScaler: {"div": "div"},
                                   LogisticRegression: {"zipmap": False}}

    x_tr, x_te, y_tr, _ = split(load_wine)
    mlp = Pipeline([
        ("scaler", StandardScaler()),
        ("clf", MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=500,
                              random_state=SEED)),
    ]).fit(x_tr, y_tr)
    yield "mlp", mlp, x_te, {StandardScaler: {"div": "div"},
                             MLPClassifier: {"zipmap": False}}

    x_tr, x_te, y_tr, _ = split(load_breast_cancer)
    forest = RandomForestClassifier(n_estimators=20, max_depth=6,
                                    random_state=SEED).fit(x_tr, y_tr)
    yield "forest", forest, x_te, {RandomForestClassifier: {"zipmap": False}}

    x_tr, x_te, _, _ = split(load_breast_cancer)
    # max_samples=128 (tree depth 7 instead of 8) keeps the file under ~300 KB;
    # the default (256) gives ~365 KB with 50 trees.
    iforest = IsolationForest(n_estimators=50, max_samples=128,
                              random_state=SEED).fit(x_tr)
    yield "iforest", iforest, x_te, None

    x_tr, x_te, y_tr, _ = split(load_diabetes)
    reg = LinearRegression().fit(x_tr, y_tr)
    yield "regressor", reg, x_te, None


def main(argv):
    if len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = argv[1] if len(argv) == 2 else "tests/models"
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()

    for name, est, x_te, options in models():
        n_features = x_te.shape[1]
        onx = convert_sklearn(
            est,
            name=name,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            target_opset=TARGET_OPSET,
            options=options,
        )
        normalize_opset_imports(onx)
        onnx.checker.check_model(onx)
        onnx_path = os.path.join(out_dir, f"{name}.onnx")
        with open(onnx_path, "wb") as f:
            f.write(onx.SerializeToString())

        rows = [[float(v) for v in row] for row in x_te.astype(np.float32)]
        rows_path = os.path.join(out_dir, f"{name}.rows.json")
        with open(rows_path, "w") as f:
            json.dump({"model": f"{name}.onnx", "features": n_features, "rows": rows}, f)
            f.write("\n")

        ops = sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onx.graph.node})
        outs = [o.name for o in onx.graph.output]
        print(f"{name}.onnx: {os.path.getsize(onnx_path)} bytes, "
              f"{len(rows)} held-out rows x {n_features} features")
        print(f"  ops:     {', '.join(ops)}")
        print(f"  outputs: {', '.join(outs)}")

    print(f"done in {time.perf_counter() - t0:.2f}s -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
