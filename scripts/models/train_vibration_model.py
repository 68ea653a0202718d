"""Trains the demo's vibration classifier on labelled readings from sensor-sim and exports it
to ONNX for the `onnx-inference` workload.

Usage: python3 train_vibration_model.py [--with-imbalance] DATASET.csv OUT.onnx

DATASET.csv is what `sensor-sim --dataset` writes (device,metric,ts,value,fault). Per
vibration sensor, every reading that completes a window of WINDOW readings makes a row of
[mean, std, min, max] over the window: exactly the row the workload builds with
`features: [vibration], window: 10, stats: [mean, std, min, max]` (std is the population
standard deviation, as there). A row is a fault (class 1) when the reading that completes it
is under a worn bearing, or when a spike (a reading over SPIKE_MM_S) is in the window during
a loose-mount fault; healthy otherwise. With `--with-imbalance` a slight imbalance is a fault
too: the demo's version 1.0.0 is trained without it, 1.1.0 (the retrained model it rolls
out) with it.

The model: StandardScaler + a small MLP, exported with the scaler as Sub/Div (skl2onnx option
`div`: tract has no Scaler operator) and plain probabilities (`zipmap: False`).
"""
import csv
import sys
from collections import defaultdict, deque

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.metrics import classification_report
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

WINDOW = 10
SPIKE_MM_S = 5.0


def rows(path, faults):
    windows = defaultdict(lambda: deque(maxlen=WINDOW))
    features, labels, kinds = [], [], []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["metric"] != "vibration":
                continue
            w = windows[r["device"]]
            w.append(float(r["value"]))
            if len(w) < WINDOW:
                continue
            x = np.asarray(w, dtype=np.float64)
            features.append([x.mean(), x.std(), x.min(), x.max()])
            fault = r["fault"]
            positive = fault in faults or (fault == "spikes" and x.max() > SPIKE_MM_S)
            labels.append(1 if positive else 0)
            kinds.append(fault or "healthy")
    return np.asarray(features, dtype=np.float32), np.asarray(labels), kinds


def main():
    args = sys.argv[1:]
    faults = {"worn-bearing"}
    if args[:1] == ["--with-imbalance"]:
        faults.add("imbalance")
        args = args[1:]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    dataset, out = args
    x, y, kinds = rows(dataset, faults)
    x_train, x_test, y_train, y_test, _, kinds_test = train_test_split(x, y, kinds, test_size=0.25, random_state=0, stratify=y)
    model = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(hidden_layer_sizes=(16,), max_iter=1000, random_state=0))])
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    print(classification_report(y_test, predicted, target_names=["healthy", "fault"], digits=3))
    for kind in sorted(set(kinds_test)):
        mask = np.asarray([k == kind for k in kinds_test])
        flagged = predicted[mask].mean() if mask.any() else 0.0
        print(f"  {kind:>13}: {mask.sum():6d} held-out rows, {flagged:6.1%} flagged")
    onnx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, 4]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        options={StandardScaler: {"div": "div"}, MLPClassifier: {"zipmap": False}},
    )
    # Sorted, deduplicated opsets: the same data gives the same bytes.
    seen = {}
    for opset in onnx.opset_import:
        seen[opset.domain] = max(seen.get(opset.domain, 0), opset.version)
    del onnx.opset_import[:]
    for domain in sorted(seen):
        entry = onnx.opset_import.add()
        entry.domain, entry.version = domain, seen[domain]
    with open(out, "wb") as f:
        f.write(onnx.SerializeToString())
    print(f"wrote {out} ({len(onnx.SerializeToString())} bytes) from {len(y)} rows ({y.mean():.1%} faults)")


if __name__ == "__main__":
    main()
