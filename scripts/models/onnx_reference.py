#!/usr/bin/env python3
"""Reference inference with onnxruntime for the ONNX test fixtures.

Usage: python3 scripts/models/onnx_reference.py MODEL.onnx ROWS.json

Runs all rows of ROWS.json (as written by train_test_models.py) in one batch,
input dtype float32, shape [n, features], on the CPU provider with one intra-op
thread, and prints one JSON object to stdout:

  {"outputs": {"<name>": {"shape": [...], "dtype": "float32", "data": [...]}}}

data is the flattened (row-major) output; floats are exact Python floats of the
output values, integers are ints. Errors go to stderr, exit status nonzero.
"""

import json
import sys

import numpy as np
import onnxruntime as ort


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model_path, rows_path = argv[1], argv[2]

    with open(rows_path) as f:
        spec = json.load(f)
    x = np.asarray(spec["rows"], dtype=np.float32)
    n_features = int(spec["features"])
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"rows have shape {x.shape}, expected [n, {n_features}]")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_path, sess_options=opts,
                                providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"expected one model input, got {[i.name for i in inputs]}")

    names = [o.name for o in sess.get_outputs()]
    results = sess.run(names, {inputs[0].name: x})

    outputs = {}
    for name, value in zip(names, results):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise ValueError(f"output {name!r} is not a tensor (zipmap/sequence?)")
        outputs[name] = {
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "data": arr.reshape(-1).tolist(),  # float32 -> exact Python float, int64 -> int
        }
    json.dump({"outputs": outputs}, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception as e:  # noqa: BLE001 - report any failure on stderr
        print(f"onnx_reference: error: {e}", file=sys.stderr)
        sys.exit(1)
