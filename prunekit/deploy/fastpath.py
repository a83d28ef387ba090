"""Does onnxruntime run a model's convolutions on its fast CPU kernels? Read off the graph it optimised.

onnxruntime's NCHWc transformer (``ORT_ENABLE_ALL``, x86 CPUs) rewrites a Conv into the blocked
``com.microsoft.nchwc`` Conv only when its channel counts suit the MLAS NCHWc kernels (multiples of 4; the
block itself is 8 or 16 channels); other Convs fall back to im2col + GEMM (``FusedConv`` / ``Conv``) with
``ReorderInput`` / ``ReorderOutput`` nodes around them. :func:`fast_path` loads a model with
``optimized_model_filepath`` and counts what the runtime will actually execute. No torch here.
"""
from __future__ import annotations

import collections
import os
import tempfile
from dataclasses import asdict, dataclass, field

from prunekit.errors import PrunekitError
from prunekit.runtimes.onnxruntime_cpu import session

NCHWC = "com.microsoft.nchwc"
CONV_OPS = ("Conv", "FusedConv")


@dataclass
class FastPath:
    convs: int  # Convs in the optimised graph (NCHWc or not)
    nchwc_convs: int
    batchnorm: int  # BatchNormalization nodes left after fusion
    reorders: int  # ReorderInput / ReorderOutput nodes (layout changes around off-path convs)
    off_path: list[str] = field(default_factory=list)  # names of the Convs that did not become NCHWc
    supported: bool = True  # False: this CPU / onnxruntime build has no NCHWc kernels at all

    @property
    def on_path(self) -> bool:
        return self.convs == self.nchwc_convs

    def summary(self) -> str:
        if not self.supported:
            return "onnxruntime has no NCHWc kernels on this CPU: fast-path check not applicable"
        text = (f"{self.nchwc_convs}/{self.convs} Convs on onnxruntime's NCHWc path, {self.batchnorm} "
                f"BatchNormalization left, {self.reorders} reorder nodes")
        if self.off_path:
            text += f"; off the path: {', '.join(self.off_path[:5])}{' …' if len(self.off_path) > 5 else ''}"
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "on_path": self.on_path}


def _optimized_graph(path: str):
    import onnx

    with tempfile.TemporaryDirectory(prefix="prunekit-fastpath-") as d:
        out = os.path.join(d, "optimized.onnx")
        session(path, threads=1, optimized_path=out)
        return onnx.load(out).graph


_SUPPORT: dict[str, bool] = {}


def nchwc_supported() -> bool:
    """Whether this onnxruntime build turns a plain 16-channel conv into an NCHWc Conv on this CPU."""
    if "cpu" not in _SUPPORT:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        w = numpy_helper.from_array(np.ones((16, 16, 3, 3), np.float32), "w")
        graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "probe",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], [w])
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "probe.onnx")
            onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), p)
            _SUPPORT["cpu"] = any(n.domain == NCHWC for n in _optimized_graph(p).node)
    return _SUPPORT["cpu"]


def _conv_name(node) -> str:
    """The layer a Conv node comes from: its weight's name (``layer1.0.conv1``) when it has one."""
    weight = node.input[1] if len(node.input) > 1 else ""
    return weight[:-len(".weight")] if weight.endswith(".weight") else (node.name or node.output[0])


def fast_path(path: str) -> FastPath:
    """Count the Convs onnxruntime (CPU, ``ORT_ENABLE_ALL``) runs on its NCHWc kernels in the ONNX file ``path``."""
    if not os.path.isfile(path):
        raise PrunekitError(f"no such ONNX file: {path}")
    graph = _optimized_graph(path)
    counts = collections.Counter((n.domain or "ai.onnx", n.op_type) for n in graph.node)
    off = [_conv_name(n) for n in graph.node if n.op_type in CONV_OPS and n.domain != NCHWC]
    nchwc = counts[(NCHWC, "Conv")]
    return FastPath(convs=nchwc + len(off), nchwc_convs=nchwc, batchnorm=counts[("ai.onnx", "BatchNormalization")],
                    reorders=counts[(NCHWC, "ReorderInput")] + counts[(NCHWC, "ReorderOutput")], off_path=off,
                    supported=nchwc > 0 or nchwc_supported())
