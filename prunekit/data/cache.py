"""Decoded images cached on disk: a source is decoded once into uint8 arrays (``$PRUNEKIT_CACHE``, default
``~/.cache/prunekit``), keyed on every source file's path, size and mtime, so a stale cache is never served and a
run never re-decodes JPEGs."""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable

import numpy as np

from prunekit.errors import user_input
from prunekit.files import cache_dir, data_dir  # noqa: F401 (where the cache lives)


def cache_path(kind: str, sources: list[str], size: tuple[int, int]) -> str:
    """Cache file keyed on every source file's path, size and mtime: a changed, added or removed file
    (not only a changed folder) gives a new key, so a stale cache is never served."""
    h = hashlib.sha1(f"{kind}|{size}".encode())
    for source in sources:
        st = os.stat(source)
        h.update(f"|{os.path.abspath(source)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return os.path.join(cache_dir(), f"{kind}-{h.hexdigest()[:16]}.npz")


def _decode(data: bytes | str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data).convert("RGB")
    h, w = size
    if img.size != (w, h):  # resize shorter side to size/0.875, centre crop (ImageNet-style evaluation)
        scale = max(h, w) / 0.875 / min(img.size)
        img = img.resize((max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale))), Image.BILINEAR)
        left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
        img = img.crop((left, top, left + w, top + h))
    return np.asarray(img, dtype=np.uint8)


def decode_one(read, member: str, size: tuple[int, int]) -> np.ndarray:
    with user_input(f"cannot decode image {member}"):
        return _decode(read(member), size)


def load_cached(path: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no cache (or it is damaged: it is then rebuilt)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:
        return None


def save_cached(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Best effort: a cache that cannot be written (read-only home, full disk) only costs a re-decode later."""
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass
    finally:  # an interrupt (or a full disk) must not leave a half-written array behind
        if os.path.exists(tmp):
            os.remove(tmp)


def cached_arrays(kind: str, sources: list[str], size: tuple[int, int],
                  decode_all: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of ``sources`` at ``size``: from the cache, else ``decode_all()`` (then cached)."""
    path = cache_path(kind, sources, size)
    arrays = load_cached(path)
    if arrays is None:
        arrays = decode_all()
        save_cached(path, arrays)
    return arrays
