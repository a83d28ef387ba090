"""The one way prunekit opens an onnxruntime session (export checks, quantization checks, benchmarks, the
latency table, the fast-path check): quiet logging, fixed intra-op threads, sequential execution, full graph
optimisation, intra-op spinning off (sessions are often timed interleaved: an idle spinning pool would steal
the cores of the one being timed)."""
from __future__ import annotations

from prunekit.errors import PrunekitError, describe


def session(path: str, threads: int | None = 1, provider: str = "cpu", optimized_path: str | None = None):
    """An ``InferenceSession`` for ``path``; ``provider`` cpu or cuda (falls back to CPU for unsupported ops);
    ``optimized_path`` saves the graph onnxruntime optimised (what the fast-path check reads)."""
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
