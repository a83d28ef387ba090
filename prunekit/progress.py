"""Progress and messages through ``logging.getLogger("prunekit")``: a bar on a terminal, plain lines in a log
file, JSON lines for tools, nothing when quiet.

Jobs call :func:`info` (a message, an ``event`` name and fields) and :func:`progress_bar` for long loops; they
never receive a log callable. Whoever runs them decides where messages go: the CLI installs a
:class:`CliHandler` with :func:`configure` (``text`` prints ``[prunekit] message`` lines on stderr, ``json``
one JSON object per line, ``quiet`` nothing); a Python user can attach any ``logging`` handler, e.g.
``logging.basicConfig(level=logging.INFO)``. Under torchrun only rank 0 speaks (:class:`RankFilter`, the one
place ranks are filtered).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

LOGGER = logging.getLogger("prunekit")


def _rank() -> int:
    """This process's torchrun rank, without importing torch (a torch-free verb has no process group)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


class RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _rank() == 0


class CliHandler(logging.Handler):
    def __init__(self, fmt: str = "text", stream=None):
        super().__init__(logging.INFO)  # the logger's level decides (quiet: warnings only)
        self.fmt = fmt
        self._stream = stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and fmt == "text"
        self.bar = None  # the tqdm bar being drawn, if any (lines are written above it)
        self.addFilter(RankFilter())

    @property
    def stream(self):
        """The given stream, else whatever ``sys.stderr`` is now (test runners swap it)."""
        return self._stream if self._stream is not None else sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.fmt == "json":
            fields = getattr(record, "fields", {})
            line = json.dumps({"event": getattr(record, "event", "log"), "message": message, **fields},
                              default=float)
        else:
            line = f"[prunekit] {message}"
        try:
            if self.bar is not None:
                self.bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed stream: progress is never worth a crash
            pass


def configure(fmt: str = "text", quiet: bool = False, stream=None) -> CliHandler | None:
    """Send prunekit's messages to ``stream`` (stderr) as text or JSON lines, or nowhere (``quiet``)."""
    for h in [h for h in LOGGER.handlers if isinstance(h, CliHandler)]:
        LOGGER.removeHandler(h)
    LOGGER.propagate = False
    handler = CliHandler(fmt, stream)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)  # quiet: warnings still reach the user
    return handler


def info(message: str, event: str = "log", **fields) -> None:
    """One message; ``event`` and ``fields`` are what a JSON line carries besides it."""
    LOGGER.info(message, extra={"event": event, "fields": fields})


def warn(message: str, **fields) -> None:
    """A warning (shown even when quiet): ``warning: message`` on stderr, a ``warning`` event in JSON."""
    LOGGER.warning(f"warning: {message}", extra={"event": "warning", "fields": fields})


class _Bar:
    """``bar(step, **postfix)`` after each step, ``bar.close()`` at the end."""

    def __init__(self, total: int, desc: str, every: int = 50):
        self.total, self.desc, self.every = total, desc, every
        self.t0 = time.perf_counter()
        self.tqdm = None
        self.handler = next((h for h in LOGGER.handlers if isinstance(h, CliHandler) and h.tty), None)
        if self.handler is not None and RankFilter().filter(None):
            from tqdm import tqdm

            self.tqdm = tqdm(total=total, desc=desc, file=self.handler.stream, leave=False, dynamic_ncols=True)
            self.handler.bar = self.tqdm

    def __call__(self, step: int, **postfix) -> None:
        if self.tqdm is not None:
            self.tqdm.update(step - self.tqdm.n)
            if postfix:
                self.tqdm.set_postfix({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in postfix.items()},
                                      refresh=False)
            return
        if (step % self.every and step != self.total) or not LOGGER.isEnabledFor(logging.INFO):
            return
        spent = time.perf_counter() - self.t0
        eta = spent / step * (self.total - step)
        extra = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in postfix.items())
        info(f"{self.desc} step {step}/{self.total} ({step / self.total:.0%}) {extra}, {spent / 60:.1f} min so far, "
             f"ETA {eta / 60:.1f} min", self.desc, step=step, total=self.total, eta_s=eta, **postfix)

    def retotal(self, total: int) -> None:
        """A new estimate of the number of steps (a loop that ends on a time budget learns it as it goes)."""
        self.total = max(int(total), 1)
        if self.tqdm is not None:
            self.tqdm.total = self.total
            self.tqdm.refresh()

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
            self.handler.bar = None


def progress_bar(total: int, desc: str) -> _Bar:
    return _Bar(total, desc)
