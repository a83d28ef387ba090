"""ONNX export with a dynamic batch dimension, one self-contained file, checked against PyTorch.

Steps, each reported in a checklist: export (``torch.onnx.export(dynamo=True, external_data=False)``,
falling back to the TorchScript exporter only if the dynamo exporter fails), ``onnx.checker``, onnxruntime
session, output names and shapes at two batch sizes, values within tolerance of the PyTorch model on the
given (real) inputs. The file is written to a temporary name and renamed only when every check passed.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn

from prunekit.errors import PrunekitError, VerificationError
from prunekit.deploy.fastpath import fast_path
from prunekit.files import default_mode
from prunekit.runtimes.onnxruntime_cpu import session
from prunekit.outputs import named_outputs
from prunekit.outputs import compare_outputs


@dataclass
class ExportReport:
    path: str
    exporter: str
    opset: int | None
    seconds: float
    bytes: int
    checks: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks)

    def checklist(self) -> str:
        return render_checklist(self.checks)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def onnx_output_names(out) -> list[str]:
    """The ONNX outputs' names: ``logits`` for a model returning one tensor, else every tensor's name in the
    structure (dict keys, ``output_0``…; :func:`prunekit.outputs.named_outputs`)."""
    leaves = named_outputs(out)
    return ["logits"] if isinstance(out, torch.Tensor) else [n for n, _ in leaves]


def _export(model: nn.Module, example: torch.Tensor, path: str, exporter: str,
            names: list[str]) -> tuple[str, int | None]:
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            prog = torch.onnx.export(model, (example,), None, dynamo=True, external_data=False,
                                     input_names=["input"], output_names=names,
                                     dynamic_shapes=({0: batch},), verbose=False)
            prog.save(path, external_data=False)
            import onnx

            return "dynamo", onnx.load(path, load_external_data=False).opset_import[0].version
        opset = 17
        torch.onnx.export(model, (example,), path, dynamo=False, input_names=["input"], output_names=names,
                          dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                          opset_version=opset)
        return "torchscript", opset


def export_onnx(model: nn.Module, inputs: torch.Tensor, out_path: str, *, atol: float = 1e-4, rtol: float = 1e-5,
                exporter: str = "dynamo") -> ExportReport:
    """Export ``model`` to ``out_path`` and check it; raises PrunekitError (with the checklist) on any failure."""
    import onnx

    model = model.eval()
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=out_dir)
    os.close(fd)
    checks: list[dict] = []
    t0 = time.perf_counter()
    try:
        example = inputs[:2] if inputs.shape[0] >= 2 else inputs
        with torch.no_grad():
            ref_out = model(inputs)
        names = onnx_output_names(ref_out)
        try:
            used, opset = _export(model, example, tmp, exporter, names)
        except Exception as e:
            if exporter != "dynamo":
                raise PrunekitError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
            first_error = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            try:
                used, opset = _export(model, example, tmp, "torchscript", names)
            except Exception as e2:
                raise PrunekitError(f"ONNX export failed (dynamo: {first_error}; torchscript: {e2})") from e2
            checks.append({"check": "dynamo exporter", "passed": True,
                           "detail": f"failed ({first_error}); used the TorchScript exporter"})
        seconds = time.perf_counter() - t0
        checks.append({"check": "export", "passed": True, "detail": f"{used} exporter, opset {opset}, {seconds:.1f} s"})
        try:
            onnx.checker.check_model(tmp, full_check=True)
            checks.append({"check": "onnx.checker", "passed": True, "detail": "valid"})
        except Exception as e:
            checks.append({"check": "onnx.checker", "passed": False, "detail": str(e).splitlines()[0][:200]})
            raise _failed(checks) from e
        proto = onnx.load(tmp, load_external_data=False)
        external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        checks.append({"check": "self-contained", "passed": not external,
                       "detail": "no external data" if not external else f"{len(external)} external tensors"})
        checks += _output_checks(model, tmp, inputs, ref_out, names, atol, rtol)
        if not all(c["passed"] for c in checks):
            raise _failed(checks)
        fp = fast_path(tmp)  # speed, not correctness: reported (and warned about), never a failure
        checks.append({"check": "onnxruntime CPU fast path", "passed": True,
                       "warning": bool(fp.supported and not fp.on_path), "detail": fp.summary(),
                       "fast_path": fp.to_dict()})
        os.chmod(tmp, default_mode())  # mkstemp made it 0600
        os.replace(tmp, out_path)
        tmp = None
        return ExportReport(out_path, used, opset, seconds, os.path.getsize(out_path), checks)
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


def _output_checks(model, path: str, inputs: torch.Tensor, ref_out, names: list[str], atol: float,
                   rtol: float) -> list[dict]:
    """Every output, by name: its shape at the inputs' batch and at batch 1 (a dynamic batch), and its values
    against PyTorch's (each within ``atol + rtol · max|its reference|``)."""
    sess = session(path, threads=None)
    in_name = sess.get_inputs()[0].name
    got_names = [o.name for o in sess.get_outputs()]
    got = dict(zip(got_names, sess.run(None, {in_name: inputs.numpy().astype(np.float32)})))
    one = dict(zip(got_names, sess.run(None, {in_name: inputs[:1].numpy().astype(np.float32)})))
    refs = [t for _, t in named_outputs(ref_out)]
    checks = [{"check": "output names", "passed": got_names == names,
               "detail": ", ".join(got_names) if got_names == names else f"onnx {got_names} vs {names}"}]
    if got_names != names:
        return checks
    several = len(names) > 1
    for name, ref in zip(names, refs):
        label = f" {name}" if several else ""
        shape_ok = tuple(got[name].shape) == tuple(ref.shape)
        checks.append({"check": f"output{label} shape at batch {inputs.shape[0]}", "passed": shape_ok,
                       "detail": f"onnx {tuple(got[name].shape)} vs torch {tuple(ref.shape)}"})
        checks.append({"check": f"dynamic batch{label} (batch 1)",
                       "passed": tuple(one[name].shape) == (1, *ref.shape[1:]), "detail": f"shape {one[name].shape}"})
        diff, allowed, ok = compare_outputs(ref, torch.from_numpy(got[name]), atol, rtol) if shape_ok else (
            float("inf"), atol, False)
        checks.append({"check": "onnxruntime == pytorch" + (f" ({name})" if several else ""), "passed": ok,
                       "detail": f"max abs diff {diff:.3g} (allowed {allowed:.3g}) on {inputs.shape[0]} inputs",
                       "max_abs_diff": diff, "allowed": allowed, **({"output": name} if several else {})})
    return checks


def render_checklist(checks: list[dict]) -> str:
    """``[x]`` passed, ``[ ]`` failed, ``[!]`` passed with a warning (e.g. a Conv off the fast path)."""
    def mark(c):
        return " " if not c["passed"] else "!" if c.get("warning") else "x"
    return "\n".join(f"  [{mark(c)}] {c['check']}: {c['detail']}" for c in checks)


def _failed(checks: list[dict]) -> PrunekitError:
    return VerificationError(f"ONNX export check failed; nothing was written:\n{render_checklist(checks)}")
