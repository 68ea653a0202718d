#!/usr/bin/env python3
"""Train a small convolutional network with PyTorch and export it to an ONNX test fixture.

Usage: python3 scripts/models/train_torch_model.py [OUT_DIR]   (default: tests/models)

The second framework of the inference tests (the others come from scikit-learn through
skl2onnx): a network on scikit-learn's 8x8 handwritten digits, input `input` float32
[N, 64] (pixels 0..16), reshaped to one 8x8 channel inside the graph; Conv 3x3 (8 filters),
ReLU, Conv 3x3 (16), ReLU, Flatten, Gemm 64, ReLU, Gemm 10. Outputs `label` (int64, ArgMax)
and `probabilities` (float32 [N, 10], Softmax), as skl2onnx's classifiers name them.

Writes cnn.onnx and cnn.rows.json (the first 120 held-out rows; the pixels are small integers,
exact in f32). Deterministic on one machine: fixed seeds, one thread, deterministic
algorithms. Pinned versions: scripts/models/torch-requirements.txt (PyTorch's PyPI wheel
brings its CUDA libraries, about 3 GB; the fixture is committed so the tests need none of it).
"""

import json
import os
import sys

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
HELD_OUT_ROWS = 120
OPSET = 18


class DigitsNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, kernel_size=3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, kernel_size=3, padding=1, stride=2),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(16 * 4 * 4, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10),
        )

    def forward(self, pixels):
        return self.features(pixels.reshape(-1, 1, 8, 8) / 16.0)


class Exported(torch.nn.Module):
    """What is exported: the network with its label and probabilities."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, input):
        logits = self.net(input)
        return torch.argmax(logits, dim=1), torch.softmax(logits, dim=1)


def train(x_tr, y_tr):
    torch.manual_seed(SEED)
    net = DigitsNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    x = torch.from_numpy(x_tr)
    y = torch.from_numpy(y_tr.astype(np.int64))
    order = torch.Generator().manual_seed(SEED)
    for _ in range(30):
        for batch in torch.randperm(len(x), generator=order).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    return net.eval()


def main(argv):
    if len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = argv[1] if len(argv) == 2 else "tests/models"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED)
    net = train(x_tr, y_tr)
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(x_te)).argmax(dim=1).numpy() == y_te).mean()

    model = Exported(net).eval()
    sample = torch.from_numpy(x_te[:2])
    onnx_path = os.path.join(out_dir, "cnn.onnx")
    torch.onnx.export(
        model,
        (sample,),
        onnx_path,
        input_names=["input"],
        output_names=["label", "probabilities"],
        dynamic_shapes=({0: torch.export.Dim("N")},),
        opset_version=OPSET,
        external_data=False,
    )
    exported = onnx.load(onnx_path)
    onnx.checker.check_model(exported, full_check=True)

    rows = [[float(v) for v in row] for row in x_te[:HELD_OUT_ROWS]]
    with open(os.path.join(out_dir, "cnn.rows.json"), "w") as f:
        json.dump({"model": "cnn.onnx", "features": x.shape[1], "rows": rows}, f)
        f.write("\n")
    ops = sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in exported.graph.node})
    print(f"cnn.onnx: {os.path.getsize(onnx_path)} bytes, held-out accuracy {accuracy:.3f}, "
          f"{len(rows)} rows x {x.shape[1]} features")
    print(f"  ops: {', '.join(ops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
