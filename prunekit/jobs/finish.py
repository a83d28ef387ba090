"""The run record both jobs write (``run.json`` and its run folder) and the checks behind its claims: the
folder reloads to the model it was written from, dense vs pruned speed on the deployment runtime."""
from __future__ import annotations

import os
import shutil

import numpy as np
import torch

from prunekit.config import JobConfig
from prunekit.data import DataBundle
from prunekit.errors import PrunekitError, VerificationError
from prunekit.files import make_temp_dir
from prunekit.progress import info, warn
from prunekit.runs.rebuild import load
from prunekit.runs.report import write_report
from prunekit.runs.record import RunRecord
from prunekit.runs.storage import save_check_inputs, save_pruned
from prunekit.outputs import compare_outputs


def data_section(cfg: JobConfig, bundle: DataBundle, val_used: int | None = None) -> dict:
    """The run record's ``data`` section (both jobs): the spec, what it is, and its split sizes."""
    return {"spec": cfg.data, "name": bundle.name, "synthetic": bundle.synthetic, "streamed": bundle.streamed,
            "train": len(bundle.train), "val": len(bundle.val) if bundle.val is not None else 0,
            **({"val_used": val_used} if val_used is not None else {}),
            "test": len(bundle.test) if bundle.test is not None else 0, "num_classes": bundle.num_classes}


def size_sections(dense, pruned) -> dict:
    """The run record's ``dense``, ``pruned``, ``reduction`` and ``layers`` sections from two model counts."""
    return {"dense": dense.to_dict(layers=False), "pruned": pruned.to_dict(layers=False),
            "reduction": {"params": 1 - pruned.params / dense.params, "macs": 1 - pruned.macs / dense.macs},
            "layers": layer_channels(dense, pruned)}


def layer_channels(before, after) -> list[dict]:
    post = {layer.name: layer for layer in after.layers}
    rows = []
    for layer in before.layers:
        a = post.get(layer.name)
        rows.append({"layer": layer.name, "type": layer.type, "in_before": layer.in_channels,
                     "in_after": a.in_channels if a else 0, "out_before": layer.out_channels,
                     "out_after": a.out_channels if a else 0, "params_before": layer.params,
                     "params_after": a.params if a else 0, "macs_before": layer.macs, "macs_after": a.macs if a else 0})
    return rows


def timed_speed(dense, pruned, input_size, cfg: JobConfig, bundle: DataBundle | None = None) -> dict | None:
    """Dense vs pruned on ``cfg.runtime`` at ``cfg.speed_batches`` (a few seconds), with the dense model on every
    other ONNX runtime here in the same loop (the fastest dense deployment, and what pruning adds over it: not
    with a latency table of another device, whose runtime this machine is not); warns when pruned is slower."""
    if not cfg.speed_batches:
        return None
    from prunekit.deploy.speed import compare_speed
    from prunekit.runs.summary import speed_summary

    info(f"timing dense vs pruned on {cfg.runtime} at batch {', '.join(map(str, cfg.speed_batches))}")
    calib = bundle.tensor(bundle.calibration(64, cfg.seed)).numpy() if bundle is not None else None
    speed = compare_speed(dense, pruned, input_size, cfg.runtime, cfg.speed_batches, cfg.latency_threads,
                          calibration=calib, baselines=not cfg.latency_table)
    if cfg.latency_table:
        speed["measured_on"] = "this machine, not the latency table's device"
        info(f"the speed check times this machine; the plan was made for the device of {cfg.latency_table}")
    if any(r["speedup"] < 1 for r in speed.get("batches", [])):
        warn(f"the pruned model is slower than the dense one: {speed_summary(speed)}")
    return speed


def check_reloads(run_dir: str, model: torch.nn.Module, inputs: torch.Tensor, atol: float) -> dict:
    """Proof that the run folder rebuilds the model it was written from: same outputs on ``inputs``.

    The model spec in a folder this process has just written names code the caller chose, so it is trusted."""
    reloaded = load(run_dir, trust_pickle=True, trust_code=True)
    with torch.no_grad():
        diff, allowed, ok = compare_outputs(model.eval()(inputs), reloaded(inputs), atol, 1e-5)
    if not ok:
        raise VerificationError(f"the run folder does not reload to the pruned model: outputs differ by {diff:.3g} "
                                f"(> {allowed:.3g}); nothing was written")
    return {"check": "pruned.pt reloads to the same model", "max_abs_diff": diff, "allowed": allowed,
            "inputs": int(inputs.shape[0]), "passed": ok}


def write_run_folder(out: str, record: RunRecord, pruned, spec, history, overwrite: bool, check_images: np.ndarray,
                     bundle: DataBundle, atol: float) -> None:
    """Write the run folder through a temporary sibling renamed into place: pruned.pt, check images, the
    reload proof, run.json and the report, or nothing."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = make_temp_dir(parent, f".{os.path.basename(os.path.abspath(out))}.tmp-")
    try:
        save_pruned(os.path.join(tmp, "pruned.pt"), pruned, spec, history)
        save_check_inputs(tmp, check_images, bundle.mean, bundle.std)
        record.verification.append(check_reloads(tmp, pruned, bundle.to_tensor(check_images), atol))
        record.write(tmp)
        write_report(tmp)
        if os.path.isdir(out):
            if os.listdir(out) and not overwrite:
                raise PrunekitError(f"{out} was filled by someone else during the run")
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
