"""The exception types a user of prunekit should ever see, and the one place that turns failures of things a
user supplied (files, factories, datasets, JSON) into them.

Every user-facing failure is a :class:`PrunekitError`: the CLI prints its message on stderr (one line, or a
checklist) and exits with its ``exit_code`` without a traceback. :func:`user_input` wraps any block that
reads or runs something the user gave us, so an unexpected exception from it becomes a PrunekitError that
names the thing (``cannot read weights w.pt: EOFError``), never a traceback.
"""
from __future__ import annotations

import contextlib


class PrunekitError(Exception):
    """A user-facing error: bad input, unsupported model, impossible target. Exit code 2."""

    exit_code = 2


class VerificationError(PrunekitError):
    """A numerical check failed (masked ≠ pruned, ONNX ≠ PyTorch): nothing was written. Exit code 1."""

    exit_code = 1


class BrokenCut(VerificationError):
    """The pruned model does not run: removing channels broke a coupling torch-pruning did not record.
    ``groups`` are the planned groups that break it when pruned alone (what to freeze before planning again);
    empty when no single group is to blame."""

    def __init__(self, message: str, groups: list[str] | None = None):
        super().__init__(message)
        self.groups = list(groups or [])


class OutOfReach(PrunekitError):
    """A target no plan can meet (on the channel grid in use): ``closest`` is the most the best plan reaches, in
    the target's own units (a fraction removed, a speedup). Callers relax the grid or report it; they never read
    the message to decide."""

    def __init__(self, message: str, closest: float | None = None):
        super().__init__(message)
        self.closest = closest


class Interrupted(PrunekitError):
    """Ctrl-C: the message says what exists on disk (nothing, or a resumable search). Exit code 130."""

    exit_code = 130


def describe(e: BaseException, limit: int = 200) -> str:
    """``TypeName: first line of the message`` (just ``TypeName`` when the message is empty)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:limit]}" if lines else type(e).__name__


@contextlib.contextmanager
def user_input(what: str):
    """Turn any failure inside the block (except PrunekitError and interrupts) into ``PrunekitError(what: …)``.

    ``what`` names the thing the user supplied, e.g. ``"cannot read weights runs/w.pt"``.
    """
    try:
        yield
    except PrunekitError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as e:
        raise PrunekitError(f"{what}: {describe(e)}") from e
