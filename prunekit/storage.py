"""Pruned-model files and run folders: saving, and loading that never runs code it was not told to trust.

``pruned.pt`` is a plain dict saved with ``torch.save`` that loads with ``weights_only=True``::

    {"format": "prunekit.pruned/1", "spec": ModelSpec dict, "input_size": [C, H, W],
     "history": torch-pruning pruning history [[module, is_out_channels, [idx, ...]], ...],
     "state_dict": pruned weights, "metadata": {module prefix: {"version": n}}}

:func:`load` rebuilds the dense architecture from the spec, replays the history through torch-pruning and
loads the state dict strictly (with the per-module ``version`` metadata that some modules' loaders need).

**Trust.** A run folder is data, but its spec may *name* code: ``path/file.py:factory`` (a user's model
file) or a pickled module. Loading such a run needs an explicit ``trust_code=True`` (CLI ``--trust-code``) or
``trust_pickle=True`` (``--trust-pickle``); without it the file is refused, by name, and never imported.

A run folder may also hold ``check_inputs.npz`` (uint8 images and their normalisation, read with
``allow_pickle=False``): the real inputs ``prunekit export RUN_DIR`` checks the ONNX file on, so export
needs neither the dataset nor a network.
"""
from __future__ import annotations

import os
import tempfile
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

from .errors import PrunekitError, describe, user_input
from .files import atomic_write_bytes, atomic_write_json, default_mode  # noqa: F401  (re-exported)
from .models import ModelSpec, build_model, load_state
from .surgery import replay

FORMAT = "prunekit.pruned/1"
CHECK_INPUTS = "check_inputs.npz"


def save_pruned(path: str, model: nn.Module, spec: ModelSpec, history: list) -> None:
    """Write ``pruned.pt`` atomically."""
    state = model.state_dict()
    metadata = {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}
    payload = {"format": FORMAT, "spec": spec.to_dict(), "input_size": list(spec.input_size),
               "history": history, "state_dict": {k: v.detach().cpu() for k, v in state.items()},
               "metadata": metadata}
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
          and all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()))
    if not ok:
        raise PrunekitError(f"{path} is a damaged prunekit file (spec, history, state_dict or input_size missing)")
    return payload


def spec_of(payload: dict, path: str) -> ModelSpec:
    with user_input(f"{path}: damaged model spec"):
        return ModelSpec.from_dict(payload["spec"])


def load(path: str, *, trust_pickle: bool = False, trust_code: bool = False) -> nn.Module:
    """Rebuild the pruned model of a run folder (or a ``pruned.pt`` file), in eval mode.

    No code named by the file runs unless the caller trusts it: ``trust_code`` for a ``file.py:factory``
    spec, ``trust_pickle`` for a pickled module.
    """
    payload = read_pruned(path)
    spec = spec_of(payload, path)
    model = build_model(spec, trust_pickle=trust_pickle, trust_code=trust_code, named_by=path).eval()
    with user_input(f"cannot rebuild the pruned model of {path}"):
        replay(model, payload["history"], tuple(int(d) for d in payload["input_size"]))
    state = OrderedDict(payload["state_dict"])
    meta = payload.get("metadata")
    if isinstance(meta, dict):
        state._metadata = OrderedDict((k, dict(v)) for k, v in meta.items() if isinstance(v, dict))  # type: ignore[attr-defined]
    load_state(model, state, path)
    return model.eval()


def load_dense(path: str, *, trust_pickle: bool = False, trust_code: bool = False) -> nn.Module:
    """The dense model a run folder was pruned from: its spec, with the weights it names when they exist
    (else random init, which is all a latency comparison needs), in eval mode. Same trust rules as :func:`load`."""
    from .models import read_state_dict

    spec = load_spec(path)
    model = build_model(spec, trust_pickle=trust_pickle, trust_code=trust_code, named_by=path).eval()
    if spec.weights and os.path.isfile(spec.weights):
        load_state(model, read_state_dict(spec.weights), spec.weights)
    return model


def load_spec(path: str) -> ModelSpec:
    return spec_of(read_pruned(path), path)


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
