"""What the CLI writes: one line (or block) per call, plain text, or under ``--log-format json`` one JSON object
per line on both streams (``say``, ``say_json``); the ``--log-format`` option every verb takes."""
from __future__ import annotations

import json

import click

from prunekit.config.choices import choices

_OUTPUT = {"format": "text"}  # --log-format of the verb being run: text, or one JSON object per line


def say(message="", err: bool = False, event: str | None = None, **fields) -> None:
    """One line (or block) of output. Under ``--log-format json`` every line prunekit writes, on stdout and
    stderr, is one JSON object: ``{"event": …, "message": …, **fields}``."""
    if _OUTPUT["format"] != "json":
        click.echo(message, err=err)
        return
    text = str(message)
    if event is None:
        event = "error" if text.startswith("error: ") else "warning" if text.startswith("warning: ") else (
            "log" if err else "output")
    click.echo(json.dumps({"event": event, "message": text, **fields}, default=float), err=err)


def say_json(obj: dict, event: str = "result") -> None:
    """A --json result: indented for a person, one line (an ``event`` object) under --log-format json."""
    if _OUTPUT["format"] == "json":
        click.echo(json.dumps({"event": event, **obj}, default=float))
    else:
        click.echo(json.dumps(obj, indent=2, default=float))


def set_format(ctx, param, value):
    """Callback of every verb's --log-format: route prunekit's log and the verb's own output alike."""
    _OUTPUT["format"] = value or "text"
    if value == "json":
        from prunekit.progress import configure

        configure("json")
        _capture_warnings()
    return value


def _capture_warnings() -> None:
    """Python warnings (torch, onnx) as JSON lines on stderr instead of free text."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        say(f"{category.__name__}: {message}", err=True, event="warning", file=filename, line=lineno)
    warnings.showwarning = show


def format_from_args(args) -> None:
    """``--log-format json`` seen before click parses (so its own usage errors come out as JSON too)."""
    args = list(args or [])
    for i, a in enumerate(args):
        if a == "--log-format=json" or (a == "--log-format" and i + 1 < len(args) and args[i + 1] == "json"):
            _OUTPUT["format"] = "json"


def log_format_option(f):
    return click.option("--log-format", type=click.Choice(choices("log_format")), default="text", show_default=True,
                        callback=set_format, is_eager=True, expose_value=False,
                        help="json: every line on stdout and stderr is one JSON object")(f)


def json_output() -> bool:
    return _OUTPUT["format"] == "json"


def reset_format(args) -> None:
    """Before click parses a command line: text unless ``--log-format json`` is on it."""
    _OUTPUT["format"] = "text"
    format_from_args(args)


def logger(quiet: bool, fmt: str | None = None):
    """Route prunekit's log (``logging.getLogger("prunekit")``) to stderr; returns the message function."""
    from prunekit.progress import configure, info

    configure(fmt or _OUTPUT["format"], quiet)
    return info
