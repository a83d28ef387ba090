"""Progress for people and for machines: a bar on a terminal, plain lines in a log file, JSON lines for tools.

:class:`Log` is the message sink the CLI hands to the jobs (``log(message)``): ``text`` prints
``[prunekit] message`` lines on stderr, ``json`` prints one JSON object per line (messages that already are
JSON objects pass through; others become ``{"event": "log", "message": …}``), ``quiet`` prints nothing.
:func:`progress_bar` turns a long loop into a tqdm bar when the sink is a text log on a terminal, and into a
line every 50 steps (with ETA) otherwise.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable


class Log:
    def __init__(self, fmt: str = "text", quiet: bool = False, stream=None):
        self.fmt, self.quiet = fmt, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and fmt == "text" and not quiet
        self._bar = None

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        if self.fmt == "json":
            line = message if message.startswith("{") else json.dumps({"event": "log", "message": message})
        else:
            line = f"[prunekit] {message}"
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def event(self, event: str, message: str, **fields) -> None:
        """A structured message: JSON with its fields in json mode, the message alone otherwise."""
        self(json.dumps({"event": event, "message": message, **fields}, default=float) if self.fmt == "json"
             else message)


class _Bar:
    """``bar(step, **postfix)`` after each step, ``bar.close()`` at the end."""

    def __init__(self, log: Callable[[str], None] | None, total: int, desc: str, every: int = 50):
        self.log, self.total, self.desc, self.every = log, total, desc, every
        self.t0 = time.perf_counter()
        self.tqdm = None
        if isinstance(log, Log) and log.tty:
            from tqdm import tqdm

            self.tqdm = tqdm(total=total, desc=desc, file=log.stream, leave=False, dynamic_ncols=True)
            log._bar = self.tqdm

    def __call__(self, step: int, **postfix) -> None:
        if self.log is None:
            return
        if self.tqdm is not None:
            self.tqdm.update(step - self.tqdm.n)
            if postfix:
                self.tqdm.set_postfix({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in postfix.items()},
                                      refresh=False)
            return
        if step % self.every and step != self.total:
            return
        spent = time.perf_counter() - self.t0
        eta = spent / step * (self.total - step)
        extra = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in postfix.items())
        message = (f"{self.desc} step {step}/{self.total} ({step / self.total:.0%}) {extra}, "
                   f"{spent / 60:.1f} min so far, ETA {eta / 60:.1f} min")
        if isinstance(self.log, Log):
            self.log.event(self.desc, message, step=step, total=self.total, eta_s=eta, **postfix)
        else:
            self.log(message)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
            self.log._bar = None


def progress_bar(log: Callable[[str], None] | None, total: int, desc: str) -> _Bar:
    return _Bar(log, total, desc)
