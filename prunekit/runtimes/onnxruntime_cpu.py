"""onnxruntime on the CPU: ``onnxruntime-cpu`` (the fp32 export) and ``onnxruntime-cpu-int8`` (the INT8 QDQ file
``prunekit quantize`` writes).

Its channel grid is MLAS's NCHWc block: onnxruntime's CPU Conv runs the NCHWc kernels only when channel
counts are multiples of 4 and pads them to the block, 16 floats with AVX-512 and 8 with AVX2 (``NchwcBlockSize``
in MLAS ``platform.cpp``): counts like 31 fall back to im2col + GEMM with reorders around them, counts like 20
run NCHWc but pay for 32. Its int8 convs show no staircase of their own (``benchmarks/int8_channels.py``), so
the int8 runtime keeps the fp32 block, the stricter rule, and times layers in fp32 for its table.

:func:`session` is the one way prunekit opens an onnxruntime session (export checks, quantization, benchmarks,
latency tables, the fast-path check).
"""
from __future__ import annotations

from prunekit.errors import PrunekitError, describe
from prunekit.runtimes.base import Grid, Runner, Runtime, register
from prunekit.runtimes.layers import own_time_ms
from prunekit.runtimes.machine import nchwc_block


def session(path: str, threads: int | None = 1, provider: str = "cpu", optimized_path: str | None = None):
    """An ``InferenceSession`` for ``path``: quiet logging, fixed intra-op threads, sequential execution, full
    graph optimisation, intra-op spinning off (sessions are often timed interleaved: an idle spinning pool
    would steal the cores of the one being timed); ``provider`` cpu or cuda (falls back to the CPU for
    unsupported ops); ``optimized_path`` saves the graph onnxruntime optimised (what the fast-path check reads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(path, so, providers=providers)
    except Exception as e:
        raise PrunekitError(f"onnxruntime cannot load {path}: {describe(e)}") from e


class OnnxRuntimeCPU(Runtime):
    family = "onnxruntime"
    module = "onnxruntime"

    def __init__(self, name: str, precision: str, help: str, quantized: bool = False,
                 table_proxy: str | None = None, depth: bool = True):
        self.name, self.precision, self.help = name, precision, help
        self.quantized, self.table_proxy, self.depth = quantized, table_proxy, depth

    def versions(self) -> dict:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}

    def load(self, artifact, threads: int, input_shape) -> Runner:
        sess = session(artifact, threads)
        name = sess.get_inputs()[0].name
        return Runner(lambda x: sess.run(None, {name: x}), self.precision)

    def grid(self, threads: int = 1) -> Grid:
        block, how = nchwc_block()
        if self.quantized:
            how += ("; int8 convs measured without a channel block of their own (benchmarks/int8_channels.py), so "
                    "the fp32 block is the stricter")
        return Grid(block, how)

    def layer_ms(self, shape, threads: int, budget_ms: float) -> float:
        def load(path):
            sess = session(path, threads)
            return lambda x: sess.run(None, {"x": x})
        return own_time_ms(shape, load, budget_ms)


register(OnnxRuntimeCPU("onnxruntime-cpu", "fp32", "onnxruntime on the CPU, fp32 (the exported file)"))
register(OnnxRuntimeCPU("onnxruntime-cpu-int8", "int8", "onnxruntime on the CPU, the INT8 QDQ file of prunekit "
                        "quantize (latency tables time fp32 layers)", quantized=True, table_proxy="onnxruntime-cpu",
                        # a dropped branch leaves a constant add that its QDQ graph runs as quantized elementwise
                        # ops, costlier than the int8 convs they replace (ResNet-56: 0.89× of dense int8)
                        depth=False))
