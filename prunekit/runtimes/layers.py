"""One layer alone, as a latency table times it: its shape (:class:`LayerShape`, the key of a table entry) and
a one-node ONNX model of it, plus the model of an empty call (reads the input, returns one number) whose time
is subtracted: a whole model runs its layers in one call, so a layer's entry is its own time, not the call's."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LayerShape:
    kind: str  # "conv" or "linear"
    in_c: int
    out_c: int
    h: int = 1  # input height / width (conv); tokens (linear: h)
    w: int = 1
    k: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    groups: int = 1
    batch: int = 1

    def key(self) -> str:
        return (f"{self.kind}:{self.in_c}>{self.out_c}@{self.h}x{self.w}:k{self.k[0]}x{self.k[1]}"
                f":s{self.stride[0]}x{self.stride[1]}:p{self.pad[0]}x{self.pad[1]}:g{self.groups}:b{self.batch}")

    @property
    def empty(self) -> bool:
        """No channels in or out: the layer is gone (a dropped residual branch), it costs nothing."""
        return self.in_c <= 0 or self.out_c <= 0

    def resized(self, in_c: int, out_c: int) -> LayerShape:
        groups = in_c if self.groups > 1 and self.groups == self.in_c == self.out_c else self.groups  # depthwise
        return LayerShape(self.kind, in_c, out_c, self.h, self.w, self.k, self.stride, self.pad, groups, self.batch)

    def input_dims(self) -> tuple[int, ...]:
        return (self.batch, self.in_c, self.h, self.w) if self.kind == "conv" else (self.batch * self.h, self.in_c)


def layer_onnx(s: LayerShape, path: str, call_only: bool = False) -> None:
    """Write the one-node ONNX model of ``s`` (input ``x``), or with ``call_only`` the model of an empty call."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(s.input_dims()))
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if call_only:  # reads x, returns one number: the fixed cost of a call
        graph = helper.make_graph([helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0)], "call", [x_info], [y_info])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return
    rng = np.random.default_rng(0)
    if s.kind == "conv":
        w = rng.standard_normal((s.out_c, s.in_c // s.groups, *s.k)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(s.k), strides=list(s.stride),
                                pads=[s.pad[0], s.pad[1], s.pad[0], s.pad[1]], group=s.groups)
    else:
        w = rng.standard_normal((s.out_c, s.in_c)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(s.out_c, np.float32), "b")]
    graph = helper.make_graph([node], "layer", [x_info], [y_info], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def layer_input(s: LayerShape) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(s.input_dims()).astype(np.float32)


def own_time_ms(shape: LayerShape, load, budget_ms: float) -> float:
    """One layer's own time (ms): its one-node model less an empty call's, each loaded by ``load(path)`` (a
    runtime's; it returns a callable on the input) and timed by its fastest call. A model runs its layers in one
    call, so the call's fixed cost is not the layer's (floored at 5 % of the layer's time)."""
    import os
    import tempfile

    from prunekit.runtimes.timing import time_budgeted

    x = layer_input(shape)
    times = {}
    with tempfile.TemporaryDirectory(prefix="prunekit-lut-") as d:
        for what in ("layer", "call"):
            path = os.path.join(d, f"{what}.onnx")
            layer_onnx(shape, path, call_only=what == "call")
            run = load(path)
            times[what] = time_budgeted(lambda run=run: run(x), budget_ms)
    return max(times["layer"] - times["call"], 0.05 * times["layer"])
