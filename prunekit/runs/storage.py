"""Pruned-model files and run folders on disk: ``pruned.pt`` written and read (``weights_only``), the check
images of a run folder. File I/O only; rebuilding a model from them is :mod:`prunekit.runs.rebuild`.

``pruned.pt`` is a plain dict saved with ``torch.save`` that loads with ``weights_only=True``::

    {"format": "prunekit.pruned/1", "spec": ModelSpec dict, "input_size": [C, H, W],
     "history": torch-pruning pruning history [[module, is_out_channels, [idx, ...]], ...],
     "dropped": [residual blocks whose branch was removed (replayed after the history)],
     "state_dict": pruned weights, "metadata": {module prefix: {"version": n}}}

A run folder may also hold ``check_inputs.npz`` (uint8 images and their normalisation, read with
``allow_pickle=False``): the real inputs ``prunekit export RUN_DIR`` checks the ONNX file on, so export
needs neither the dataset nor a network.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
import torch.nn as nn

from prunekit.errors import PrunekitError, describe, user_input
from prunekit.files import atomic_write_bytes, default_mode

FORMAT = "prunekit.pruned/1"
CHECK_INPUTS = "check_inputs.npz"


def save_pruned(path: str, model: nn.Module, spec, history: list) -> None:
    """Write ``pruned.pt`` atomically (``spec``: the :class:`~prunekit.models.ModelSpec` of the dense model)."""
    from prunekit.core.branches import dropped_blocks

    state = model.state_dict()
    metadata = {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}
    payload = {"format": FORMAT, "spec": spec.to_dict(), "input_size": list(spec.input_size),
               "history": history, "dropped": dropped_blocks(model),
               "state_dict": {k: v.detach().cpu() for k, v in state.items()}, "metadata": metadata}
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="tmp-", suffix=".pt")  # torch.save rejects some names
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _pruned_path(path: str) -> str:
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "pruned.pt")):
            raise PrunekitError(f"{path} is not a run folder (no pruned.pt)")
        return os.path.join(path, "pruned.pt")
    if not os.path.isfile(path):
        raise PrunekitError(f"no pruned model at {path}")
    return path


def read_pruned(path: str) -> dict:
    """The payload of a run folder's (or a file's) ``pruned.pt``, checked for shape; nothing is executed."""
    path = _pruned_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PrunekitError(f"cannot read {path} (weights_only=True): {describe(e)}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PrunekitError(f"{path} is not a prunekit pruned model ({FORMAT})")
    ok = (isinstance(payload.get("spec"), dict) and isinstance(payload.get("history"), list)
          and isinstance(payload.get("state_dict"), dict) and isinstance(payload.get("input_size"), (list, tuple))
          and all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
          and isinstance(payload.get("dropped", []), list)
          and all(isinstance(b, str) for b in payload.get("dropped", [])))
    if not ok:
        raise PrunekitError(f"{path} is a damaged prunekit file (spec, history, state_dict or input_size missing)")
    return payload


def save_check_inputs(run_dir: str, images: np.ndarray, mean, std) -> None:
    """Store a few real (uint8, NHWC) images and their normalisation for checks that must not need the data."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, images=np.ascontiguousarray(images, dtype=np.uint8),
                        mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32))
    atomic_write_bytes(os.path.join(run_dir, CHECK_INPUTS), buf.getvalue())


def load_check_inputs(run_dir: str) -> torch.Tensor | None:
    """The normalised check inputs stored in ``run_dir`` (NCHW float), or None if there are none."""
    path = os.path.join(run_dir, CHECK_INPUTS)
    if not os.path.isfile(path):
        return None
    with user_input(f"cannot read {path}"), np.load(path, allow_pickle=False) as z:
        images, mean, std = z["images"], z["mean"], z["std"]
        if images.ndim != 4 or images.dtype != np.uint8 or mean.shape != (3,) or std.shape != (3,):
            raise PrunekitError(f"{path} does not hold uint8 images with a 3-channel normalisation")
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - torch.from_numpy(mean).view(1, 3, 1, 1)) / torch.from_numpy(std).view(1, 3, 1, 1)
