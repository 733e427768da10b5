#!/usr/bin/env python3
"""Times ONNX Runtime's SoftmaxCrossEntropyLoss (opset 13, reduction mean, float32 logits,
int64 labels) on the CPU execution provider, intra_op_num_threads = n.

forward only: ONNX Runtime's inference sessions have no backward, so forward_backward is
skipped (a note on stderr). The operator takes the class axis at 1 only, so for an NHWC case
of rank > 2 the model is Transpose(perm = [0, k+1, 1..k]) -> SoftmaxCrossEntropyLoss, fed the
class-last tensor: the row's time includes that transpose, and the row says so in "note". A 2-D
(rows, classes) case needs no transpose. Arguments and output: common.py.
"""

import common

args = common.parse_args(__doc__)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402


def build_model(shape, layout):
    rank = len(shape)
    transpose = layout == "NHWC" and rank > 2
    stored = [shape[0], *shape[2:], shape[1]] if transpose else list(shape)
    nodes = []
    logits = "X"
    if transpose:
        perm = [0, rank - 1, *range(1, rank - 1)]
        nodes.append(helper.make_node("Transpose", ["X"], ["X_nchw"], perm=perm))
        logits = "X_nchw"
    nodes.append(helper.make_node("SoftmaxCrossEntropyLoss", [logits, "T"], ["loss"],
                                  reduction="mean"))
    graph = helper.make_graph(
        nodes, "sce",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, stored),
         helper.make_tensor_value_info("T", TensorProto.INT64, [shape[0], *shape[2:]])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString(), stored, transpose


rng = np.random.default_rng(0)
if "forward_backward" in args.ops:
    common.note("onnxruntime: forward_backward skipped (inference sessions have no backward)")
for shape, layout in args.case:
    if "forward" not in args.ops:
        continue
    model, stored, transpose = build_model(shape, layout)
    x = rng.random(stored, dtype=np.float32) * 4 - 2
    labels = rng.integers(0, shape[1], [shape[0], *shape[2:]], dtype=np.int64)
    for threads in args.threads:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feeds = {"X": x, "T": labels}
        ms_min, ms_median, runs = common.time_it(lambda: session.run(["loss"], feeds), args)
        extra = {"version": ort.__version__}
        if transpose:
            extra["note"] = "Transpose(class-last -> class-first) + SoftmaxCrossEntropyLoss"
        common.emit("onnxruntime", "forward", shape, layout, threads, ms_min, ms_median, runs,
                    **extra)
        del session
    del x, labels
