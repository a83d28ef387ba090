"""The channel grid a plan keeps: ``--round-to N|auto`` and ``--runtime`` → :class:`Alignment`.

A pruned model is only worth shipping if it runs faster where it ships, and that depends on channel counts:
each runtime's fast kernels want multiples of some block (onnxruntime's MLAS NCHWc block, OpenVINO's measured
grid, tensor cores' 8). The runtime object (:mod:`prunekit.runtimes`) knows its grid; this module turns the
user's ``--round-to`` into the multiple every pruned group keeps and says how it was chosen (written to
``run.json``); the widths a group may take on that grid are :func:`prunekit.runtimes.base.candidate_widths`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from prunekit.config.choices import parse_round_to
from prunekit.runtimes import get_runtime


@dataclass(frozen=True)
class Alignment:
    round_to: int  # every pruned group keeps a multiple of this many channels (or its full width)
    runtime: str
    detected: str  # how ``round_to`` was chosen, in words

    def to_dict(self) -> dict:
        return asdict(self)

    def relaxed(self, round_to: int, target: str) -> Alignment:
        """The alignment actually used when ``target`` was out of reach at ``self.round_to``."""
        return Alignment(round_to, self.runtime, f"{self.detected}; relaxed to {round_to}: {target} is out of "
                                                 f"reach with multiples of {self.round_to}")


def resolve_round_to(round_to, runtime: str = "onnxruntime-cpu", block: tuple[int, str] | None = None,
                     threads: int = 1) -> Alignment:
    """The channel multiple for ``--round-to`` (``auto`` asks the runtime for its grid) and ``--runtime``;
    ``block``: the target device's grid (from its latency table) instead of this machine's."""
    rt = get_runtime(runtime)
    value = parse_round_to(round_to)
    if value != "auto":
        return Alignment(value, rt.name, "set by --round-to" if value > 1 else "no alignment (--round-to 1)")
    if block and block[0]:
        return Alignment(int(block[0]), rt.name, f"the latency table's device: {block[1]}")
    grid = rt.grid(threads)
    return Alignment(grid.multiple, rt.name, grid.detected)
