"""ONNX Runtime's inference rate in Python, the baseline of scripts/bench.sh.

Usage: python3 onnx_bench.py MODEL.onnx ROWS.json BATCH SECONDS
Runs the model with onnxruntime (CPU, one thread) on BATCH rows (the held-out rows repeated)
for about SECONDS and prints the calls per second.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    model, rows_path, batch, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with open(rows_path) as f:
        rows = np.asarray(json.load(f)["rows"], dtype=np.float32)
    x = np.resize(rows, (batch, rows.shape[1])).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(50):
        session.run(None, {name: x})
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            session.run(None, {name: x})
        calls += 20
        now = time.perf_counter()
        if now >= deadline:
            break
    print(f"{calls / (now - start):.1f}")


if __name__ == "__main__":
    main()
