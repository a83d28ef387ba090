"""Run folders and pruned-model files: atomic writes, and loading that never unpickles code.

``pruned.pt`` is a plain dict saved with ``torch.save`` that loads with ``weights_only=True``::

    {"format": "prunekit.pruned/1", "spec": ModelSpec dict, "input_size": [C, H, W],
     "history": torch-pruning pruning history [[module, is_out_channels, [idx, ...]], ...],
     "state_dict": pruned weights}

:func:`load` rebuilds the dense architecture from the spec, replays the history through torch-pruning and
loads the state dict strictly.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch
import torch.nn as nn

from .errors import PrunekitError
from .models import ModelSpec, build_model, load_state
from .surgery import replay

FORMAT = "prunekit.pruned/1"


def atomic_write_bytes(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_pruned(path: str, model: nn.Module, spec: ModelSpec, history: list) -> None:
    """Write ``pruned.pt`` atomically."""
    payload = {"format": FORMAT, "spec": spec.to_dict(), "input_size": list(spec.input_size),
               "history": history, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="tmp-", suffix=".pt")  # torch.save rejects some names
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_pruned(path: str) -> dict:
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "pruned.pt")):
            raise PrunekitError(f"{path} is not a run folder (no pruned.pt)")
        path = os.path.join(path, "pruned.pt")
    if not os.path.isfile(path):
        raise PrunekitError(f"no pruned model at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PrunekitError(f"cannot read {path} (weights_only=True): {str(e).splitlines()[0][:200]}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PrunekitError(f"{path} is not a prunekit pruned model ({FORMAT})")
    return payload


def load(path: str, *, trust_pickle: bool = False) -> nn.Module:
    """Rebuild the pruned model of a run folder (or a ``pruned.pt`` file), in eval mode.

    No pickled code runs unless the model itself was a pickled module *and* ``trust_pickle=True``.
    """
    payload = read_pruned(path)
    spec = ModelSpec.from_dict(payload["spec"])
    model = build_model(spec, trust_pickle=trust_pickle).eval()
    replay(model, payload["history"], tuple(payload["input_size"]))
    load_state(model, payload["state_dict"], path)
    return model.eval()


def load_spec(path: str) -> ModelSpec:
    return ModelSpec.from_dict(read_pruned(path)["spec"])
