"""Static INT8 quantization of an exported model with onnxruntime: calibrated, checked, accuracy re-measured.

:func:`quantize_onnx` runs onnxruntime's pre-processing (shape inference, graph optimisation), then
``quantize_static`` in QDQ format with per-channel int8 weights and uint8 activations, calibrated on real
images (``minmax``, ``entropy`` or ``percentile``). The int8 model cannot equal the fp32 one, so its check
is a stated bound, not 1e-4: top-1 agreement with fp32 on the check inputs and the largest logit difference
relative to the fp32 logits' range are reported, with a warning when agreement falls under
:data:`AGREEMENT_BOUND`. Non-finite or wrongly shaped outputs fail (exit 1, nothing written). The file is
written to a temporary name and renamed when the checks are done.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from prunekit.errors import PrunekitError, VerificationError, describe
from prunekit.files import check_writable_location, default_mode
from prunekit.runtimes.onnxruntime_cpu import session
from prunekit.progress import info

METHODS = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear", "QGemm"}
AGREEMENT_BOUND = 0.9  # int8 top-1 should agree with fp32 on at least this share of the check inputs


@dataclass
class QuantizeReport:
    path: str
    source: str
    method: str
    calibration_images: int
    seconds: float
    bytes: int
    fp32_bytes: int
    checks: list[dict] = field(default_factory=list)
    accuracy: dict | None = None  # {"split", "images", "fp32", "int8"} when labelled data was given

    def to_dict(self) -> dict:
        return asdict(self)


def int8_path(path: str) -> str:
    """Where the INT8 sibling of an ONNX file lives: ``NAME.onnx`` → ``NAME.int8.onnx`` (the one naming rule)."""
    return path[:-len(".onnx")] + ".int8.onnx" if path.endswith(".onnx") else path + ".int8.onnx"


def read_onnx(path: str):
    """Load an ONNX file with a clear error (missing, corrupt, not ONNX)."""
    import onnx

    if not os.path.isfile(path):
        raise PrunekitError(f"no such ONNX file: {path}")
    try:
        return onnx.load(path)
    except Exception as e:
        raise PrunekitError(f"cannot read ONNX file {path}: {describe(e)}") from e


def is_quantized(model) -> bool:
    return any(n.op_type in QUANTIZED_OPS for n in model.graph.node)


class _Reader:
    """onnxruntime's calibration data reader over an array of normalised images (N, C, H, W)."""

    def __init__(self, name: str, images: np.ndarray, batch: int = 16):
        self.batches = [{name: images[i:i + batch]} for i in range(0, len(images), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]

    def rewind(self):
        self.i = 0


def _run_all(sess, x: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """Every output of ``sess`` on ``x`` (in batches), by the ONNX output name."""
    name, outs = sess.get_inputs()[0].name, [o.name for o in sess.get_outputs()]
    parts = [sess.run(None, {name: x[i:i + batch]}) for i in range(0, len(x), batch)]
    return {o: np.concatenate([p[k] for p in parts]) for k, o in enumerate(outs)}


def _run(sess, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The first output (a classifier's scores)."""
    return next(iter(_run_all(sess, x, batch).values()))


# what onnxruntime's QDQ quantizer would quantize, less BatchNormalization: a BN that export could not fold into its
# conv (a concatenation between them, as in a mixed conv) gets its 1-D scale quantized "per channel along axis 1"
# (out of range: onnxruntime warns and writes a malformed DequantizeLinear that makes OpenVINO's compiler crash);
# left in float it runs between the int8 convs as it is
def _quantized_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry

    return sorted(t for t in QDQRegistry if t != "BatchNormalization")


def quantize_onnx(fp32_path: str, out_path: str, calibration: np.ndarray, check_inputs: np.ndarray, *,
                  method: str = "minmax", test: tuple[np.ndarray, np.ndarray] | None = None) -> QuantizeReport:
    """Quantize ``fp32_path`` (an fp32 ONNX classifier) to ``out_path``; ``calibration`` and ``check_inputs``
    are normalised float32 images (N, C, H, W); ``test`` = (images, labels) adds an accuracy comparison."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise PrunekitError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
    model = read_onnx(fp32_path)
    if is_quantized(model):
        raise PrunekitError(f"{fp32_path} is already quantized (it has "
                            f"{sorted({n.op_type for n in model.graph.node} & QUANTIZED_OPS)[0]} nodes)")
    if not len(calibration):
        raise PrunekitError("no calibration images")
    check_writable_location(out_path)
    inits = {t.name for t in model.graph.initializer}
    input_name = next(i.name for i in model.graph.input if i.name not in inits)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=out_dir)
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix="prunekit-quant-") as d:
            pre = os.path.join(d, "pre.onnx")
            try:
                quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
            except Exception as e:  # pre-processing is an optimisation: quantize the model as it is
                info(f"onnxruntime pre-processing failed ({describe(e)}); quantizing without it")
                pre = fp32_path
            info(f"calibrating on {len(calibration)} images ({method}), quantizing (QDQ, per-channel int8 weights, "
                "uint8 activations)")
            try:
                quantize_static(pre, tmp, _Reader(input_name, calibration.astype(np.float32)),
                                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                                op_types_to_quantize=_quantized_types(),
                                weight_type=QuantType.QInt8, calibrate_method={
                                    "minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                    "percentile": CalibrationMethod.Percentile}[method])
            except Exception as e:
                raise PrunekitError(f"onnxruntime could not quantize {fp32_path}: {describe(e)}") from e
        seconds = time.perf_counter() - t0
        checks = compare_int8(fp32_path, tmp, check_inputs)
        if not all(c["passed"] for c in checks):
            from prunekit.deploy.export import render_checklist

            raise VerificationError(f"INT8 check failed; nothing was written:\n{render_checklist(checks)}")
        accuracy = None
        if test is not None and len(test[0]):
            info(f"accuracy of fp32 and int8 on {len(test[0])} test images")
            fp32, int8 = (_run(session(p, os.cpu_count() or 1), test[0]) for p in (fp32_path, tmp))
            accuracy = {"split": "test", "images": int(len(test[0])),
                        "fp32": float(100 * (fp32.argmax(1) == test[1]).mean()),
                        "int8": float(100 * (int8.argmax(1) == test[1]).mean())}
        os.chmod(tmp, default_mode())
        os.replace(tmp, out_path)
        tmp = None
        return QuantizeReport(out_path, fp32_path, method, int(len(calibration)), seconds, os.path.getsize(out_path),
                              os.path.getsize(fp32_path), checks, accuracy)
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


def compare_int8(fp32_path: str, int8_path: str, inputs: np.ndarray) -> list[dict]:
    """The int8 model's checklist against fp32 on ``inputs``, output by output (every named output of a
    multi-output model): it runs, shapes match, outputs finite; argmax agreement along the channel axis (top-1
    for class scores, per position for maps) and the largest difference relative to the fp32 output range
    (reported against a bound)."""
    import onnx

    checks = []
    try:
        onnx.checker.check_model(int8_path)
        checks.append({"check": "onnx.checker", "passed": True, "detail": "valid"})
    except Exception as e:
        checks.append({"check": "onnx.checker", "passed": False, "detail": describe(e)})
        return checks
    x = inputs.astype(np.float32)
    refs, gots = (_run_all(session(p), x) for p in (fp32_path, int8_path))
    if list(refs) != list(gots):
        checks.append({"check": "int8 outputs", "passed": False,
                       "detail": f"int8 outputs {list(gots)} are not the fp32 model's {list(refs)}"})
        return checks
    several = len(refs) > 1
    for name, ref in refs.items():
        checks += _compare_output(name if several else None, ref, gots[name], len(x))
    return checks


def _compare_output(name: str | None, ref: np.ndarray, got: np.ndarray, n: int) -> list[dict]:
    which = f" ({name})" if name else ""
    ok = got.shape == ref.shape and bool(np.isfinite(got).all())
    checks = [{"check": f"int8 output{which} at batch {n}", "passed": ok,
               "detail": f"shape {tuple(got.shape)} (fp32 {tuple(ref.shape)}), "
                         f"{'finite' if np.isfinite(got).all() else 'NOT finite'}"}]
    if not ok:
        return checks
    axis = 1 if ref.ndim > 1 else -1  # classes (or channels) are the second axis of scores and of maps
    agree = float((ref.argmax(axis) == got.argmax(axis)).mean())
    span = float(ref.max() - ref.min()) or 1.0
    rel = float(np.abs(ref - got).max()) / span
    checks.append({"check": f"int8 ≈ fp32{which} (stated bound)", "passed": True, "warning": agree < AGREEMENT_BOUND,
                   "detail": f"{'top-1' if ref.ndim == 2 else 'per-position argmax'} agreement {agree:.0%} on {n} "
                             f"inputs (bound ≥ {AGREEMENT_BOUND:.0%}), max |diff| {np.abs(ref - got).max():.3g} = "
                             f"{rel:.1%} of the fp32 output range",
                   "top1_agreement": agree, "max_abs_diff": float(np.abs(ref - got).max()), "relative_diff": rel})
    return checks
