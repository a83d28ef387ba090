"""Targets a prune job aims at (``params=``, ``flops=``, ``acc=``, ``fidelity=``, ``latency=``, ``speedup=``),
what Algorithm 3 scales thresholds by (the cost basis), and ``--time-limit`` durations. Plain parsing, no torch."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from prunekit.errors import PrunekitError

TARGET_KINDS = {"params": "params", "flops": "macs", "macs": "macs", "acc": "accuracy", "fidelity": "fidelity",
                "latency": "latency", "speedup": "speedup"}


class TargetKind(str, Enum):
    """What a target bounds. A ``str`` enum: it compares, hashes and serialises as its value (a resumed search's
    saved kind is a plain string and still compares equal)."""
    params = "params"
    macs = "macs"  # FLOPs = 2 × MACs: the same fraction
    accuracy = "accuracy"
    fidelity = "fidelity"
    latency = "latency"
    speedup = "speedup"

    def __str__(self) -> str:
        return self.value

    @property
    def sizes(self) -> bool:
        """A fraction of params or MACs to remove."""
        return self in (TargetKind.params, TargetKind.macs)

    @property
    def timed(self) -> bool:
        """Met by measured time: a latency or a speedup."""
        return self in (TargetKind.latency, TargetKind.speedup)

    @property
    def bounds_quality(self) -> bool:
        """A maximum loss of accuracy (labels) or of fidelity to the dense model (no labels needed)."""
        return self in (TargetKind.accuracy, TargetKind.fidelity)


# targets that bound a quality measure's loss (a search keeps the rounds within it and minimises the size)
QUALITY_KINDS = (TargetKind.accuracy, TargetKind.fidelity)


class CostBasis(str, Enum):
    """What a group's channels cost, for Algorithm 3's threshold scale and the knapsack's budget. A ``str`` enum:
    it compares, hashes and serialises as its value (members are named as their values for that reason)."""
    params = "params"
    macs = "macs"
    latency = "latency"

    def __str__(self) -> str:
        return self.value


def cost_basis(cost: str, target: Target, minimize: str = "params") -> CostBasis:
    """What Algorithm 3 scales each group's threshold by: ``params``, ``macs`` or ``latency`` (``auto``: the
    target's own measure; for accuracy targets, what is minimised)."""
    if cost != "auto":
        return CostBasis({"flops": "macs"}.get(cost, cost))
    if target.bounds_quality:
        return CostBasis.macs if minimize == "flops" else CostBasis.params
    return CostBasis.latency if target.kind == TargetKind.speedup else CostBasis(target.kind)


@dataclass
class Target:
    kind: TargetKind
    amount: float  # params/macs: fraction to remove; accuracy, fidelity: max loss in points; latency: ms; speedup: ×
    text: str

    def __post_init__(self) -> None:
        self.kind = TargetKind(self.kind)

    @property
    def bounds_quality(self) -> bool:
        """A maximum loss of accuracy (labels) or of fidelity to the dense model (no labels needed)."""
        return self.kind.bounds_quality


def parse_target(text: str) -> Target:
    """``params=0.5`` / ``flops=0.5`` (fraction to remove), ``acc=1.0`` (max top-1 loss in points on the
    validation split), ``fidelity=2`` (max loss of agreement with the dense model in points on the validation
    images, labels not needed: :func:`prunekit.compute.fidelity.fidelity_score`), ``latency=2.5`` (ms at batch 1
    in onnxruntime on this machine's CPU), ``speedup=1.5`` (1.5 × faster than the dense model on ``--runtime`` at
    the speed-check batch, measured)."""
    m = re.fullmatch(r"\s*([a-z]+)\s*=\s*([-+0-9.eE]+)\s*(%|ms|x|×)?\s*", text or "")
    if not m:
        raise PrunekitError("target must look like params=0.5, flops=0.5, acc=1.0, fidelity=2, latency=2.5 or "
                            "speedup=1.5, "
                            f"got {text!r}")
    kind, value, unit = m.group(1), m.group(2), m.group(3)
    try:
        amount = float(value) / (100 if unit == "%" and kind not in ("acc", "fidelity") else 1)
    except ValueError:
        raise PrunekitError(f"target value {value!r} is not a number") from None
    if kind not in TARGET_KINDS:
        raise PrunekitError(f"unknown target kind {kind!r}: use params=, flops=, acc=, fidelity=, latency= or "
                            "speedup=")
    kind = TargetKind(TARGET_KINDS[kind])
    if kind.sizes and not 0 < amount < 1:
        raise PrunekitError(f"target {text!r}: the reduction must be a fraction strictly between 0 and 1")
    if kind in QUALITY_KINDS and not 0 <= amount < 100:
        raise PrunekitError(f"target {text!r}: the {kind} loss must be between 0 and 100 points")
    if kind == TargetKind.latency and not amount > 0:
        raise PrunekitError(f"target {text!r}: the latency must be positive (milliseconds)")
    if kind == TargetKind.speedup and not (math.isfinite(amount) and amount > 1):
        raise PrunekitError(f"target {text!r}: the speedup must be a number greater than 1 (times faster than dense)")
    return Target(kind, amount, text.strip())


def parse_duration(text: str | None) -> float | None:
    """``2h``, ``30m``, ``90s``, ``1h30m``, or plain seconds → seconds."""
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not m or not any(m.groups()):
        raise PrunekitError(f"time limit must look like 2h, 30m, 90s or 1h30m, got {text!r}")
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    total = h * 3600 + mi * 60 + se
    if total <= 0:
        raise PrunekitError(f"time limit must be positive, got {text!r}")
    return total
