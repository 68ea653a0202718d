"""Writes small ONNX files that must be refused, for the tests (tests/models/hostile-*.onnx).

- hostile-huge.onnx: valid, but for a batch of N rows it makes a float tensor of
  N x 30 x 100000 (12 MB per row): gigabytes at any batch an edge accepts.
- hostile-unknown-op.onnx: valid ONNX using an operator no backend has (com.example:Magic).

Usage: python3 make_hostile_models.py [OUT_DIR]   (default tests/models)
"""
import os
import sys

import onnx
from onnx import TensorProto, helper


def huge():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 30])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 30, 100000])
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"], name="shape_of_input"),
        helper.make_node("Constant", [], ["wide"], name="wide",
                         value=helper.make_tensor("wide_value", TensorProto.INT64, [1], [100000])),
        helper.make_node("Concat", ["shape", "wide"], ["big_shape"], name="big_shape", axis=0),
        helper.make_node("ConstantOfShape", ["big_shape"], ["output"], name="gigabytes",
                         value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
    ]
    graph = helper.make_graph(nodes, "huge", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeplane-tests")


def unknown_op():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 30])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 30])
    nodes = [helper.make_node("Magic", ["input"], ["output"], name="magic_node", domain="com.example")]
    graph = helper.make_graph(nodes, "unknown_op", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
                             producer_name="edgeplane-tests")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/models"
    os.makedirs(out, exist_ok=True)
    model = huge()
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "hostile-huge.onnx"))
    onnx.save(unknown_op(), os.path.join(out, "hostile-unknown-op.onnx"))
    print("wrote hostile-huge.onnx and hostile-unknown-op.onnx to", out)


if __name__ == "__main__":
    main()
