"""Files a run writes and reads: atomic writes with the user's umask, output locations checked before any work,
JSON read with clear errors. No torch here: deploy-side verbs (check, report) import this alone.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

from prunekit.errors import PrunekitError, describe


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` / ``mkdir()`` would give: 0666 (files) or 0777 (folders) less the umask.
    ``mkstemp`` / ``mkdtemp`` create 0600 / 0700, which would hide results from other users."""
    return (0o777 if directory else 0o666) & ~_umask()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``path`` through a temporary file in the same folder and rename it into place."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def read_json(path: str, what: str = "file") -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a PrunekitError naming it. NaN and
    infinities (which Python's json accepts) are refused: no figure we read may be one."""
    if not os.path.isfile(path):
        raise PrunekitError(f"no such {what}: {path}")

    def _no_constants(name):
        raise ValueError(f"{name} is not a number")

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, parse_constant=_no_constants)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PrunekitError(f"{what} {path} is not valid JSON: {describe(e)}") from e


def require_finite(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise PrunekitError(f"{name} must be a finite number, got {value!r}")
    return value


def _existing_ancestor(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def check_writable_location(path: str, what: str = "--out") -> None:
    """Fail now, before any work, if ``path`` (a file or folder to create) could not be written later: an
    ancestor that is a file, or a folder we cannot create files in (tested by creating one)."""
    parent = _existing_ancestor(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(parent):
        raise PrunekitError(f"{what} {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".prunekit-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise PrunekitError(f"{what} {path}: cannot write in {parent} ({e.strerror or describe(e)})") from e


def check_output_folder(out: str, overwrite: bool) -> None:
    """A run folder must not exist (or be empty, or ``overwrite``), and must be creatable."""
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise PrunekitError(f"--out {out} is a file, not a folder")
        if os.listdir(out) and not overwrite:
            raise PrunekitError(f"{out} already exists and is not empty (choose another --out or --overwrite)")
    check_writable_location(out)


def make_temp_dir(parent: str, prefix: str) -> str:
    """``mkdtemp`` with the permissions a plain ``mkdir`` would give."""
    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(d, default_mode(directory=True))
    return d


def cache_dir() -> str:
    return os.environ.get("PRUNEKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "prunekit")


def data_dir() -> str:
    return os.environ.get("PRUNEKIT_DATA") or os.path.join(cache_dir(), "data")
