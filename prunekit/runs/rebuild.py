"""Rebuild a pruned model from its run folder without running code it was not told to trust.

:func:`load` builds the dense architecture from the stored spec, replays the torch-pruning history and loads
the state dict strictly (with the per-module ``version`` metadata some modules' loaders need).

**Trust.** A run folder is data, but its spec may *name* code: ``path/file.py:factory`` (a user's model file)
or a pickled module. Loading such a run needs an explicit ``trust_code=True`` (CLI ``--trust-code``) or
``trust_pickle=True`` (``--trust-pickle``); without it the file is refused, by name, and never imported.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch.nn as nn

from prunekit.errors import user_input
from prunekit.models import ModelSpec, build_model, load_folded, load_state, read_state_dict
from prunekit.runs.storage import read_pruned
from prunekit.core.surgery import replay


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
        replay(model, payload["history"], tuple(int(d) for d in payload["input_size"]), payload.get("dropped", []))
    state = OrderedDict(payload["state_dict"])
    meta = payload.get("metadata")
    if isinstance(meta, dict):
        state._metadata = OrderedDict((k, dict(v)) for k, v in meta.items() if isinstance(v, dict))  # type: ignore[attr-defined]
    load_state(model, state, path)
    return model.eval()


def load_dense(path: str, *, trust_pickle: bool = False, trust_code: bool = False) -> nn.Module:
    """The dense model a run folder was pruned from: its spec, with the weights it names when they exist
    (else random init, which is all a latency comparison needs), in eval mode. Same trust rules as :func:`load`."""
    spec = load_spec(path)
    model = build_model(spec, trust_pickle=trust_pickle, trust_code=trust_code, named_by=path).eval()
    if spec.weights and os.path.isfile(spec.weights):
        state = load_folded(spec, read_state_dict(spec.weights), spec.weights, trust_pickle=trust_pickle,
                            trust_code=trust_code, named_by=path)
        load_state(model, state, spec.weights)
    return model


def load_spec(path: str) -> ModelSpec:
    return spec_of(read_pruned(path), path)


def is_pruned_file(path: str) -> bool:
    """Is ``path`` a ``pruned.pt`` (a run's model file) rather than some other torch file?"""
    from prunekit.errors import PrunekitError

    try:
        read_pruned(path)
        return True
    except PrunekitError:
        return False


def load_source(source: str, *, weights: str | None = None, input_size=None, num_classes: int | None = None,
                trust_pickle: bool = False, trust_code: bool = False):
    """(model, spec, check inputs stored in the run or None) for a run folder, a ``pruned.pt``, a pickled
    module or a model spec. A run folder's model is rebuilt without running code unless the user trusts it."""
    from prunekit.models import is_torch_file, resolve_model
    from prunekit.runs.storage import load_check_inputs

    if os.path.isdir(source) or (os.path.isfile(source) and is_torch_file(source) and is_pruned_file(source)):
        stored = load_check_inputs(source) if os.path.isdir(source) else None
        return load(source, trust_pickle=trust_pickle, trust_code=trust_code), load_spec(source), stored
    model, spec = resolve_model(source, weights=weights, input_size=input_size, num_classes=num_classes,
                                trust_pickle=trust_pickle)
    return model, spec, None
