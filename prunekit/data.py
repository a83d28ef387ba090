"""Datasets, splits and loaders.

Data is decoded once into uint8 arrays (N, H, W, 3) and cached on disk (``$PRUNEKIT_CACHE``, default
``~/.cache/prunekit``), so a run never re-decodes JPEGs. Batches are normalised (and augmented, for
training) as tensors, which is much cheaper than per-image PIL transforms.

Data specs (``--data``):

- ``cifar10``: looked up under ``$PRUNEKIT_DATA`` (default ``~/.cache/prunekit/data``): torchvision's
  ``cifar-10-batches-py/`` or our ``cifar10-jpeg.tar.gz``; if neither is there, torchvision downloads the
  official archive into that folder.
- a path to ``cifar10-jpeg.tar.gz`` (or any ``.tar.gz`` in ImageFolder layout with ``train/`` and ``test/``)
- a folder with ``train/`` and ``test/`` (or ``val/``) ImageFolder subfolders
- ``random``: synthetic Gaussian inputs of the model's input size, no labels (structure only, no accuracy)

Validation split: within each class of the training set, files sorted by name (or in the official order),
the last 10 % are validation (for CIFAR-10: the last 500 of 5,000), the rest training.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .errors import PrunekitError, user_input

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VAL_FRACTION = 0.1
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def cache_dir() -> str:
    return os.environ.get("PRUNEKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "prunekit")


def data_dir() -> str:
    return os.environ.get("PRUNEKIT_DATA") or os.path.join(cache_dir(), "data")


@dataclass
class ArrayDataset:
    """Images as uint8 (N, H, W, 3) and int64 labels (or None for unlabelled data)."""

    images: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "ArrayDataset":
        return ArrayDataset(self.images[idx], None if self.labels is None else self.labels[idx])


@dataclass
class DataBundle:
    """Everything a run reads: splits, normalisation, and what the data is."""

    name: str
    train: ArrayDataset
    val: ArrayDataset | None
    test: ArrayDataset | None
    num_classes: int | None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    synthetic: bool = False

    @property
    def has_labels(self) -> bool:
        return not self.synthetic and self.train.labels is not None

    def calibration(self, n: int, seed: int = 0) -> ArrayDataset:
        """``n`` images drawn without replacement from the training split (deterministic for a seed)."""
        n = min(n, len(self.train))
        idx = np.sort(np.random.default_rng(seed).choice(len(self.train), size=n, replace=False))
        return self.train.subset(idx)

    def to_tensor(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def batches(self, ds: ArrayDataset, batch_size: int = 256, *, shuffle: bool = False, augment: bool = False,
                seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Normalised batches ``(x, y)``; ``augment`` = random crop (padding H/8) + horizontal flip."""
        order = np.random.default_rng(seed).permutation(len(ds)) if shuffle else np.arange(len(ds))
        gen = torch.Generator().manual_seed(seed)
        for start in range(0, len(ds), batch_size):
            idx = order[start:start + batch_size]
            x = self.to_tensor(ds.images[idx])
            if augment:
                x = random_crop_flip(x, pad=max(1, x.shape[-1] // 8), generator=gen)
            y = None if ds.labels is None else torch.from_numpy(ds.labels[idx])
            yield x, y


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Standard CIFAR augmentation on a batch: zero-pad, random crop back to size, random horizontal flip."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


# ----------------------------------------------------------------------------------------------- loading
def load_data(spec: str, input_size: tuple[int, int, int] = (3, 32, 32), *, random_size: int = 256) -> DataBundle:
    """Resolve a data spec (see module doc) into a :class:`DataBundle`."""
    if spec == "random":
        return _random_bundle(input_size, random_size)
    if spec == "cifar10":
        return _cifar10_from_dir(data_dir())
    if os.path.isfile(spec) and spec.endswith((".tar.gz", ".tgz", ".tar")):
        return _from_tarball(spec, input_size)
    if os.path.isdir(spec):
        if os.path.isdir(os.path.join(spec, "cifar-10-batches-py")) or os.path.isfile(
                os.path.join(spec, "cifar10-jpeg.tar.gz")):
            return _cifar10_from_dir(spec)
        return _from_image_folder(spec, input_size)
    raise PrunekitError(
        f"data {spec!r} not found: use cifar10, random, an ImageFolder root with train/ and test/, "
        "or a .tar.gz of one"
    )


def _random_bundle(input_size, n: int) -> DataBundle:
    c, h, w = input_size
    if c != 3:
        raise PrunekitError(f"random data makes RGB images; the model expects {c} channels")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    ds = ArrayDataset(imgs, None)
    return DataBundle("random", ds, None, ds, None, synthetic=True)


def _cifar10_from_dir(root: str) -> DataBundle:
    official = os.path.join(root, "cifar-10-batches-py")
    tarball = os.path.join(root, "cifar10-jpeg.tar.gz")
    if os.path.isfile(tarball) and not os.path.isdir(official):
        return _from_tarball(tarball, (3, 32, 32), name="cifar10")
    import torchvision

    try:
        train = torchvision.datasets.CIFAR10(root, train=True, download=not os.path.isdir(official))
        test = torchvision.datasets.CIFAR10(root, train=False, download=False)
    except Exception as e:
        raise PrunekitError(
            f"CIFAR-10 not found under {root} and could not be downloaded ({type(e).__name__}); "
            "set PRUNEKIT_DATA to a folder holding cifar-10-batches-py/ or cifar10-jpeg.tar.gz"
        ) from e
    tr_x, tr_y = np.asarray(train.data), np.asarray(train.targets, dtype=np.int64)
    tr_idx, va_idx = _split_per_class(tr_y)
    full = ArrayDataset(tr_x, tr_y)
    return DataBundle("cifar10", full.subset(tr_idx), full.subset(va_idx),
                      ArrayDataset(np.asarray(test.data), np.asarray(test.targets, dtype=np.int64)), 10)


def _split_per_class(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): per class, in the given order, the last VAL_FRACTION are validation."""
    tr, va = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = int(round(len(idx) * VAL_FRACTION))
        tr.append(idx[:len(idx) - n_val])
        va.append(idx[len(idx) - n_val:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


def _cache_path(kind: str, sources: list[str], size: tuple[int, int]) -> str:
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


def _decode_one(read, member: str, size: tuple[int, int]) -> np.ndarray:
    with user_input(f"cannot decode image {member}"):
        return _decode(read(member), size)


def _decode_entries(entries: dict[str, list[tuple[str, str]]], read, size
                    ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Decode ``entries`` (split → [(class, member)], ``read(member)`` → bytes or path) into
    (split → (images, labels), class names); within a class, members are taken in sorted order."""
    classes = sorted({c for split in entries.values() for c, _ in split})
    cls_idx = {c: i for i, c in enumerate(classes)}
    arrays = {}
    for split, items in entries.items():
        items = sorted(items)  # per class, by file name
        imgs = np.stack([_decode_one(read, m, size) for _, m in items]) if items else np.zeros((0, *size, 3), np.uint8)
        arrays[split] = (imgs, np.array([cls_idx[c] for c, _ in items], dtype=np.int64))
    return arrays, classes


def _load_cached(path: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no cache (or it is damaged: it is then rebuilt)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:
        return None


def _save_cached(path: str, arrays: dict[str, np.ndarray]) -> None:
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


def _finish(name: str, z: dict[str, np.ndarray]) -> DataBundle:
    full = ArrayDataset(z["train_x"], z["train_y"])
    tr_idx, va_idx = _split_per_class(z["train_y"])
    test = ArrayDataset(z["test_x"], z["test_y"]) if len(z["test_x"]) else None
    return DataBundle(name, full.subset(tr_idx), full.subset(va_idx), test, int(z["num_classes"]))


def _split_of(parts: list[str]) -> str | None:
    if len(parts) >= 3 and parts[-3] in ("train", "test", "val") and parts[-1].lower().endswith(_IMAGE_EXT):
        return parts[-3]
    return None


def _from_tarball(path: str, input_size, name: str | None = None) -> DataBundle:
    size = tuple(input_size[1:])
    cached = _cache_path("tar", [path], size)
    name = name or ("cifar10" if os.path.basename(path).startswith("cifar10") else os.path.basename(path))
    z = _load_cached(cached)
    if z is not None:
        return _finish(name, z)
    try:
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            entries: dict[str, list] = {"train": [], "test": []}
            for mname in members:
                parts = mname.strip("./").split("/")
                split = _split_of(parts)
                if split:
                    entries["test" if split == "val" and not entries["test"] else split].append((parts[-2], mname))
            if not entries["train"]:
                raise PrunekitError(f"{path} has no train/<class>/<image> entries")
            arrays, classes = _decode_entries(entries, lambda m: tar.extractfile(members[m]).read(), size)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise PrunekitError(f"cannot read {path}: {e}") from e
    z = {"train_x": arrays["train"][0], "train_y": arrays["train"][1], "test_x": arrays["test"][0],
         "test_y": arrays["test"][1], "num_classes": np.array(len(classes))}
    _save_cached(cached, z)
    return _finish(name, z)


def _from_image_folder(root: str, input_size) -> DataBundle:
    train_dir = os.path.join(root, "train")
    test_dir = next((os.path.join(root, s) for s in ("test", "val") if os.path.isdir(os.path.join(root, s))), None)
    if not os.path.isdir(train_dir) or test_dir is None:
        raise PrunekitError(f"{root} is not an ImageFolder root: it needs train/ and test/ (or val/) subfolders")
    size = tuple(input_size[1:])
    entries = {}
    for split, d in (("train", train_dir), ("test", test_dir)):
        entries[split] = [(c, os.path.join(d, c, f)) for c in sorted(os.listdir(d)) if os.path.isdir(os.path.join(d, c))
                          for f in sorted(os.listdir(os.path.join(d, c))) if f.lower().endswith(_IMAGE_EXT)]
    if not entries["train"]:
        raise PrunekitError(f"{train_dir} holds no images in class subfolders")
    cached = _cache_path("folder", [p for split in entries.values() for _, p in split], size)
    z = _load_cached(cached)
    if z is not None:
        return _finish(os.path.basename(root.rstrip("/")), z)
    arrays, classes = _decode_entries(entries, lambda p: p, size)
    z = {"train_x": arrays["train"][0], "train_y": arrays["train"][1], "test_x": arrays["test"][0],
         "test_y": arrays["test"][1], "num_classes": np.array(len(classes))}
    _save_cached(cached, z)
    return _finish(os.path.basename(root.rstrip("/")), z)
