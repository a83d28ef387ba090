"""The files the deploy verbs (export, quantize, bench) work on, each found or made in one place: a run
folder's ONNX models (exported on demand), their INT8 siblings (``NAME.int8.onnx``), the check inputs an export
is verified on, and the calibration / check / test images a quantization needs.

No job and no trainer here; torch is imported only where a PyTorch model has to be exported or rebuilt.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from prunekit.deploy.quantize import int8_path
from prunekit.errors import PrunekitError
from prunekit.progress import info, warn
from prunekit.runs.record import RunRecord


RUN_ONNX = {"pruned": "model.onnx", "dense": "dense.onnx"}


def run_onnx(run_dir: str, which: str = "pruned", *, trust_code: bool = False, out_dir: str | None = None,
             model=None) -> str:
    """The run folder's ONNX model (``model.onnx`` for the pruned model, ``dense.onnx`` for the dense one);
    when it is missing, the model is rebuilt (``model``, when the caller already holds it) and exported into
    ``out_dir`` (default: the run folder itself)."""
    path = os.path.join(run_dir, RUN_ONNX[which])
    if os.path.isfile(path):
        return path
    import torch

    from prunekit.deploy.export import export_onnx
    from prunekit.runs.rebuild import load, load_dense, load_spec
    from prunekit.runs.storage import load_check_inputs

    if model is None:
        model = (load if which == "pruned" else load_dense)(run_dir, trust_code=trust_code)
    x = load_check_inputs(run_dir)
    x = x[:4] if x is not None else torch.randn(2, *load_spec(run_dir).input_size)
    path = os.path.join(out_dir or run_dir, RUN_ONNX[which])
    info(f"exporting {run_dir}'s {which} model to ONNX first ({path})")
    export_onnx(model, x, path)
    return path


def fp32_onnx(source: str, *, trust_code: bool = False, out_dir: str | None = None) -> str:
    """An fp32 ONNX file for SOURCE: the file itself, or a run folder's pruned model (exported when missing)."""
    if os.path.isdir(source):
        return run_onnx(source, "pruned", trust_code=trust_code, out_dir=out_dir)
    if not os.path.isfile(source):
        raise PrunekitError(f"no such ONNX file or run folder: {source}")
    return source


def export_inputs(data: str | None, stored, input_size: tuple[int, ...], n: int):
    """(inputs, what they are in words) an export is checked on: ``data`` when given, else the images stored in
    the run folder, else random normal inputs (seed 0)."""
    import torch

    from prunekit.data import load_data
    from prunekit.data.inputs import sample_inputs

    if data and data != "random":
        inputs = sample_inputs(load_data(data, tuple(input_size)), n)
        kind = f"{inputs.shape[0]} images of {data}"
    elif stored is not None and not data:
        inputs = stored[:n]
        kind = f"{inputs.shape[0]} images stored in the run folder"
    else:
        inputs = torch.randn(n, *input_size, generator=torch.Generator().manual_seed(0))
        kind = f"{n} random normal inputs"
    if tuple(inputs.shape[1:]) != tuple(input_size):
        raise PrunekitError(f"the check inputs are {tuple(inputs.shape[1:])} but the model takes {tuple(input_size)}")
    return inputs, kind


@dataclass
class CalibrationSet:
    calib: np.ndarray  # images the activation ranges are calibrated on (training split)
    check: np.ndarray  # inputs fp32 and int8 are compared on (the run's stored images when there are)
    test: tuple[np.ndarray, np.ndarray] | None  # (images, labels) of the test split, for accuracy side by side


def calibration_set(data: str | None, input_size: tuple[int, ...], calib_images: int = 256, *,
                    run_dir: str | None = None, eval_images: int | None = 0,
                    stored_fallback: bool = False) -> CalibrationSet:
    """Calibration, check and (with labelled data and ``eval_images`` ≠ 0) test images for an INT8 model.

    ``data`` defaults to the run's data (``run.json``). Without any, ``stored_fallback`` calibrates on the run
    folder's stored check images (latency work only, with a warning); otherwise it is an error."""
    from prunekit.data import load_data
    from prunekit.data.inputs import sample_inputs, spread
    from prunekit.runs.storage import load_check_inputs

    data = data or (RunRecord.data_spec(run_dir) if run_dir else None)
    stored = load_check_inputs(run_dir) if run_dir else None
    if not data or (data == "random" and stored_fallback and stored is not None):
        if not (stored_fallback and stored is not None):
            raise PrunekitError("quantize needs calibration images: give --data (cifar10, an ImageFolder root, a "
                                ".tar.gz, or random for latency work only)")
        warn(f"calibrating on the run folder's {len(stored)} stored images (latency only)")
        calib = stored.numpy()
        return CalibrationSet(calib, calib, None)
    if data == "random":
        warn("calibrating on random inputs: the int8 model's accuracy is meaningless (fine for latency work)")
    bundle = load_data(data, tuple(input_size))
    calib = bundle.tensor(bundle.calibration(calib_images)).numpy()
    check = stored.numpy() if stored is not None else sample_inputs(bundle, 16).numpy()
    test = None
    if bundle.has_labels and bundle.test is not None and eval_images != 0:
        ds = bundle.test if eval_images is None else bundle.test.subset(spread(len(bundle.test), eval_images))
        test = (bundle.tensor(ds).numpy(), ds.labels)
    return CalibrationSet(calib, check, test)


def quantize_file(fp32_path: str, out: str, data: str | None, calib_images: int = 256, method: str = "minmax",
                  eval_images: int | None = 0, *, run_dir: str | None = None, stored_fallback: bool = False):
    """Quantize one fp32 ONNX file (calibrated, checked, test accuracy re-measured when there are labels)."""
    from prunekit.deploy.speed import onnx_info
    from prunekit.deploy.quantize import is_quantized, quantize_onnx, read_onnx

    if is_quantized(read_onnx(fp32_path)):
        raise PrunekitError(f"{fp32_path} is already quantized")
    cal = calibration_set(data, onnx_info(fp32_path)["input_size"], calib_images, run_dir=run_dir,
                          eval_images=eval_images, stored_fallback=stored_fallback)
    return quantize_onnx(fp32_path, out, cal.calib, cal.check, method=method, test=cal.test)


def quantize_source(source: str, out: str, data: str | None = None, calib_images: int = 256,
                    method: str = "minmax", eval_images: int | None = None, *, trust_code: bool = False):
    """``prunekit quantize``: SOURCE (a run folder or an fp32 ONNX file) → INT8 at ``out``; a run folder's
    ``run.json`` records the result."""
    import tempfile

    from prunekit.files import check_writable_location

    check_writable_location(out)
    run_dir = source if os.path.isdir(source) else None
    with tempfile.TemporaryDirectory(prefix="prunekit-quantize-") as d:
        fp32_path = fp32_onnx(source, trust_code=trust_code, out_dir=d)
        report = quantize_file(fp32_path, out, data, calib_images, method, eval_images, run_dir=run_dir)
    if run_dir and os.path.isfile(os.path.join(run_dir, "run.json")):
        record = RunRecord.read(run_dir)
        record.int8 = {**(record.int8 or {}), "pruned": report.to_dict()}
        record.write(run_dir)
    return report


def int8_siblings(source: str, paths: dict[str, str], data: str | None,
                  quantize: Callable | None = None) -> dict[str, str]:
    """INT8 files of the dense and pruned models: beside the ONNX files (``NAME.int8.onnx``); for a run folder,
    quantized on demand (calibration: ``data``, else the run's data, else its stored check images)."""
    out = {}
    for k in ("dense", "pruned"):
        q = int8_path(paths[k])
        if not os.path.isfile(q):
            if not os.path.isdir(source):
                raise PrunekitError(f"no INT8 model beside {paths[k]}: run prunekit quantize {paths[k]} --out {q} "
                                    "--data …")
            (quantize or quantize_file)(paths[k], q, data, 256, "minmax", 0, run_dir=source, stored_fallback=True)
        out[k] = q
    return out


@dataclass
class ExportOutcome:
    report: object  # prunekit.deploy.export.ExportReport of the fp32 file
    inputs: str  # what it was checked on, in words
    int8: object | None = None  # the QuantReport of NAME.int8.onnx, with --int8
    int8_out: str | None = None


def export_source(source: str, out: str, *, weights: str | None = None, input_size=None,
                  num_classes: int | None = None, trust_pickle: bool = False, trust_code: bool = False,
                  atol: float = 1e-4, data: str | None = None, check_images: int = 16, exporter: str = "dynamo",
                  int8: bool = False) -> ExportOutcome:
    """``prunekit export``: SOURCE (run folder, ``pruned.pt``, model spec) → ONNX at ``out``, checked against
    PyTorch on real inputs (``data``, else the run's stored images, else random); with ``int8`` also a
    calibrated ``NAME.int8.onnx``."""
    import math

    from prunekit.deploy.export import export_onnx
    from prunekit.files import check_writable_location
    from prunekit.runs.rebuild import load_source

    if check_images <= 0:
        raise PrunekitError("--check-images must be positive")
    if not math.isfinite(atol) or atol < 0:
        raise PrunekitError(f"--atol must be a finite number ≥ 0, got {atol}")
    check_writable_location(out)
    model, spec, stored = load_source(source, weights=weights, input_size=input_size, num_classes=num_classes,
                                      trust_pickle=trust_pickle, trust_code=trust_code)
    inputs, kind = export_inputs(data, stored, spec.input_size, check_images)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        warn(f"creating the folder {parent}")
    info(f"exporting with the {exporter} exporter; checking on {kind}")
    outcome = ExportOutcome(export_onnx(model, inputs, out, atol=atol, exporter=exporter), kind)
    if int8:
        run_dir = source if os.path.isdir(source) else None
        outcome.int8_out = int8_path(out)
        outcome.int8 = quantize_file(out, outcome.int8_out, data, 256, "minmax", 0, run_dir=run_dir)
    return outcome
