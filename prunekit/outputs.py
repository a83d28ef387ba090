"""A model's outputs as named tensors, whatever structure ``forward`` returns: a tensor, a tuple / list, a dict
(``OrderedDict`` included), nested. Names are dict keys (joined with ``.`` when nested) and positions
(``output_0``, ``output_1``… at the top; ``boxes.1`` inside a dict): the names ONNX export gives the outputs,
the keys of per-output checks, losses and fidelity metrics. A leaf that is not a tensor (a string, ``None``, a
custom object) is one :class:`~prunekit.errors.PrunekitError` naming where it is and what it is.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from prunekit.errors import PrunekitError


def named_outputs(out, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """``[(name, tensor), …]`` of every tensor leaf of ``out``, in a fixed order (dict order, then positions)."""
    if isinstance(out, torch.Tensor):
        return [(prefix or "output", out)]
    if isinstance(out, Mapping):
        items = [(str(k), v) for k, v in out.items()]
    elif isinstance(out, (tuple, list)):
        items = [(f"output_{i}" if not prefix else str(i), v) for i, v in enumerate(out)]
    else:
        where = f" at {prefix!r}" if prefix else ""
        raise PrunekitError(f"the model returns a {type(out).__name__}{where}: prunekit handles tensors and tuples, "
                            "lists and dicts of tensors (nested too)")
    if not items:
        raise PrunekitError(f"the model returns an empty {type(out).__name__}" + (f" at {prefix!r}" if prefix else ""))
    leaves = []
    for name, value in items:
        leaves += named_outputs(value, f"{prefix}.{name}" if prefix else name)
    return leaves


def output_names(out) -> list[str]:
    return [n for n, _ in named_outputs(out)]


def output_tensors(out) -> list[torch.Tensor]:
    return [t for _, t in named_outputs(out)]


def describe_outputs(out) -> str:
    """``out (1, 21, 64, 64), aux (1, 21, 64, 64)`` for messages."""
    return ", ".join(f"{n} {tuple(t.shape)}" for n, t in named_outputs(out))


def compare_outputs(reference, other, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(max abs diff, allowed diff, passed): allowed = atol + rtol · max|reference| (numpy's allclose rule,
    on the whole output). Trained classifiers have logits of order 10, so the rtol term is small there; it
    matters for randomly initialised deep nets whose outputs reach 1e4. Several outputs (tuples, dicts, nested)
    are compared one by one, each with its own allowance; the figures returned are the worst output's (the one
    closest to, or furthest past, its allowance), and it passes when every output does."""
    if not isinstance(reference, torch.Tensor) or not isinstance(other, torch.Tensor):
        ref, got = named_outputs(reference), named_outputs(other)
        if [n for n, _ in ref] != [n for n, _ in got]:
            return float("inf"), atol, False
        each = [compare_outputs(r, g, atol, rtol) for (_, r), (_, g) in zip(ref, got)]
        worst = max(each, key=lambda c: c[0] / c[1] if c[1] > 0 else float("inf"))
        return worst[0], worst[1], all(c[2] for c in each)
    reference, other = reference.detach().double(), other.detach().double()
    if reference.shape != other.shape:
        return float("inf"), atol, False
    diff = float((reference - other).abs().max()) if reference.numel() else 0.0
    allowed = atol + rtol * float(reference.abs().max()) if reference.numel() else atol
    return diff, allowed, bool(diff <= allowed)  # NaN fails
