"""Latency tables measured on the target device (``prunekit latency-table``): onnx and the runtime, no torch.

A user who prunes on an x86 workstation for an ARM board needs the board's layer timings and channel block,
not the workstation's (NVIDIA HALP measures its lookup table on the target). This module reads the layer
shapes of an fp32 ONNX model (Conv and Gemm nodes, spatial sizes from ONNX shape inference), adds every
width a plan may give those layers on the channel grid (``--round-to``), times each shape on ``--runtime``
(onnxruntime or OpenVINO) exactly as :class:`~prunekit.deploy.latency_table.LatencyTable` does, and writes one JSON
file with the device's CPU, the runtime's fingerprint and its channel grid (measured there, for OpenVINO). No
torch is imported: it runs wherever the runtime does.

``prunekit prune --latency-table table.json`` then plans and aligns from that file
(:meth:`LatencyTable.from_file`, which reads the file with
:func:`~prunekit.deploy.latency_table.read_table`: a shape the
file lacks is refused by name, never measured locally).
"""
from __future__ import annotations

import os
import time

from prunekit.deploy.latency_table import TABLE_FORMAT, LatencyTable, LayerShape
from prunekit.runtimes.base import candidate_widths
from prunekit.errors import PrunekitError
from prunekit.files import atomic_write_json
from prunekit.progress import info
from prunekit.runtimes import cpu_info, get_runtime


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def onnx_layer_shapes(path: str, batch: int = 1) -> list[LayerShape]:
    """Every Conv / Gemm of an fp32 ONNX model as a :class:`LayerShape` at ``batch`` (the keys torch's
    :func:`~prunekit.deploy.latency_table.layer_shapes` gives the same layers)."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(path))
    except Exception as e:  # noqa: BLE001 (a file that is not an ONNX model)
        raise PrunekitError(f"cannot read {path} as an ONNX model: {e}") from None
    g = model.graph
    inits = {t.name: tuple(t.dims) for t in g.initializer}
    dims = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    shapes = []
    for node in g.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            w = inits[node.input[1]]
            x = dims.get(node.input[0])
            if w is None or len(w) != 4 or x is None or len(x) != 4 or None in x[2:]:
                raise PrunekitError(f"{path}: conv {node.name or node.output[0]} has no static input size")
            groups = int(_attr(node, "group", 1))
            pads = list(_attr(node, "pads", [0, 0, 0, 0]))
            shapes.append(LayerShape("conv", int(w[1]) * groups, int(w[0]), int(x[2]), int(x[3]),
                                     (int(w[2]), int(w[3])), tuple(int(s) for s in _attr(node, "strides", [1, 1])),
                                     (int(pads[0]), int(pads[1])), groups, batch))
        elif node.op_type == "Gemm" and len(node.input) > 1 and node.input[1] in inits:
            w = inits[node.input[1]]
            out_c, in_c = (w[0], w[1]) if int(_attr(node, "transB", 0)) else (w[1], w[0])
            shapes.append(LayerShape("linear", int(in_c), int(out_c), 1, 1, batch=batch))
    if not shapes:
        raise PrunekitError(f"{path} has no Conv or Gemm layer with constant weights to time")
    return shapes


def candidate_shapes(shapes: list[LayerShape], round_to: int) -> list[LayerShape]:
    """The shapes a plan on the ``round_to`` grid may give these layers: every kept input × output width
    (depthwise convs: one width for both), unique. The model's input channels and the classifier's outputs are
    never pruned, so they keep their width."""
    first_in = shapes[0].in_c
    last_out = shapes[-1].out_c if shapes[-1].kind == "linear" else None
    out = {}
    for s in shapes:
        if s.kind == "conv" and s.groups > 1 and s.groups == s.in_c == s.out_c:
            for c in candidate_widths(s.out_c, round_to):
                r = s.resized(c, c)
                out[r.key()] = r
            continue
        ins = [s.in_c] if s.in_c == first_in and s is shapes[0] else candidate_widths(s.in_c, round_to)
        outs = [s.out_c] if (s is shapes[-1] and last_out is not None) else candidate_widths(s.out_c, round_to)
        for i in ins:
            for o in outs:
                r = s.resized(i, o)
                out[r.key()] = r
    return list(out.values())


def device_info(runtime: str = "onnxruntime-cpu", threads: int = 1) -> dict:
    """This device as a table records it: the CPU, the runtime's fingerprint and its channel grid."""
    rt = get_runtime(runtime).require()
    timer = get_runtime(rt.table_proxy or rt.name)
    grid = rt.grid(threads)
    return {**cpu_info().to_dict(), "fingerprint": timer.fingerprint(threads), "grid": grid.to_dict(),
            **timer.versions()}


def source_onnx(source: str, tmp_dir: str) -> str:
    """An fp32 ONNX file of SOURCE's dense model: the file itself (no torch), a run folder's ``dense.onnx``
    (exported when missing), or a model spec exported here (both of those need torch)."""
    if source.endswith(".onnx"):
        if not os.path.isfile(source):
            raise PrunekitError(f"no such ONNX file: {source}")
        return source
    if os.path.isdir(source):
        from prunekit.deploy.artifacts import run_onnx

        return run_onnx(source, "dense", out_dir=tmp_dir)
    import torch

    from prunekit.deploy.export import export_onnx
    from prunekit.models import resolve_model

    model, spec = resolve_model(source)
    path = os.path.join(tmp_dir, "dense.onnx")
    export_onnx(model, torch.randn(2, *spec.input_size), path, exporter="torchscript")
    return path


def build_table(onnx_path: str, out: str, *, runtime: str = "onnxruntime-cpu", threads: int = 1, batch: int = 1,
                round_to: int | str = "auto", budget_ms: float = 60.0, max_shapes: int = 5000) -> dict:
    """Time every candidate shape of ``onnx_path``'s layers here on ``runtime`` and write the table to ``out``."""
    from prunekit.config.choices import parse_round_to

    if threads < 1 or batch < 1 or budget_ms <= 0:
        raise PrunekitError("--threads and --batch must be positive integers and --budget-ms positive")
    if get_runtime(runtime).artifact != "onnx":
        raise PrunekitError(f"--runtime {runtime} runs PyTorch modules: prunekit latency-table times ONNX runtimes")
    dev = device_info(runtime, threads)
    step = parse_round_to(round_to)
    step = dev["grid"]["multiple"] if step == "auto" else step
    shapes = candidate_shapes(onnx_layer_shapes(onnx_path, batch), step)
    if len(shapes) > max_shapes:
        raise PrunekitError(f"{len(shapes)} layer shapes to time (more than --max-shapes {max_shapes}): use a "
                            "coarser --round-to")
    table = LatencyTable(runtime, threads, path=os.devnull, budget_ms=budget_ms)
    info(f"timing {len(shapes)} layer shapes of {onnx_path} at batch {batch} on this device ({dev['cpu']}, "
         f"{table.timed_on}, widths on a grid of {step})")
    t0, entries = time.perf_counter(), {}
    for i, s in enumerate(shapes, 1):
        entries[s.key()] = table._measure(s)
        if i % 50 == 0 or i == len(shapes):
            info(f"latency-table: {i}/{len(shapes)} shapes, {time.perf_counter() - t0:.0f} s", "latency-table",
                 step=i, total=len(shapes))
    doc = {"prunekit_latency_table": TABLE_FORMAT, "runtime": table.runtime, "timed_on": table.timed_on,
           "threads": threads, "batch": batch,
           "round_to": step, "source": os.path.basename(onnx_path), "device": dev,
           "seconds": time.perf_counter() - t0, "entries": dict(sorted(entries.items()))}
    atomic_write_json(out, doc)
    return doc
