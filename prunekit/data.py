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
from collections.abc import Iterator

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
    """Images decoded into memory as uint8 (N, H, W, 3) and int64 labels (or None for unlabelled data)."""

    images: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        return ArrayDataset(self.images[idx], None if self.labels is None else self.labels[idx])

    def images_at(self, idx) -> np.ndarray:
        return self.images[idx]


@dataclass
class FileDataset:
    """Images streamed from disk (an ImageFolder too large to decode into memory): file paths and labels.
    Evaluation reads resize the shorter side to size/0.875 and centre-crop; training batches use
    RandomResizedCrop + horizontal flip (``torchvision.transforms.v2``) in DataLoader workers."""

    paths: list[str]
    labels: np.ndarray
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.size)

    def subset(self, idx: np.ndarray) -> FileDataset:
        return FileDataset([self.paths[i] for i in idx], self.labels[idx], self.size)

    def images_at(self, idx) -> np.ndarray:
        idx = np.arange(len(self))[idx] if not isinstance(idx, np.ndarray) else idx
        return np.stack([_decode_one(lambda p: p, self.paths[i], self.size) for i in idx]) if len(idx) else \
            np.zeros((0, *self.size, 3), np.uint8)


class _Files(torch.utils.data.Dataset):
    """A FileDataset as a torch Dataset of (uint8 CHW tensor, label), decoded in DataLoader workers."""

    def __init__(self, ds: FileDataset, train: bool):
        from torchvision.transforms import v2

        h, w = ds.size
        self.ds = ds
        self.transform = v2.Compose([v2.RandomResizedCrop((h, w), antialias=True), v2.RandomHorizontalFlip()]
                                    if train else [v2.Resize(round(min(h, w) / 0.875), antialias=True),
                                                   v2.CenterCrop((h, w))])

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision.transforms.v2 import functional as TF

        with Image.open(self.ds.paths[i]) as img:
            x = TF.pil_to_tensor(img.convert("RGB"))
        return self.transform(x), int(self.ds.labels[i])


Dataset = ArrayDataset | FileDataset


@dataclass
class DataBundle:
    """Everything a run reads: splits, normalisation, and what the data is."""

    name: str
    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int | None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    synthetic: bool = False
    workers: int = 0  # DataLoader workers for streamed data (0: decode in the main process)

    @property
    def has_labels(self) -> bool:
        return not self.synthetic and self.train.labels is not None

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, FileDataset)

    def calibration(self, n: int, seed: int = 0) -> Dataset:
        """``n`` images drawn without replacement from the training split (deterministic for a seed)."""
        n = min(n, len(self.train))
        idx = np.sort(np.random.default_rng(seed).choice(len(self.train), size=n, replace=False))
        return self.train.subset(idx)

    def to_tensor(self, images: np.ndarray | torch.Tensor, device=None, memory_format=torch.contiguous_format,
                  channels_first: bool = False) -> torch.Tensor:
        """uint8 images (N, H, W, 3), or (N, 3, H, W) with ``channels_first``, → normalised float on ``device``
        (moved as uint8: a quarter of the bytes of floats)."""
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
        if device is not None and x.device != torch.device(device):
            x = x.to(device, non_blocking=True)
        if not channels_first:
            x = x.permute(0, 3, 1, 2)
        x = x.float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous(memory_format=memory_format)

    def tensor(self, ds: Dataset) -> torch.Tensor:
        """A (small) dataset as one normalised tensor on the CPU."""
        return self.to_tensor(ds.images_at(np.arange(len(ds))))

    def batches(self, ds: Dataset, batch_size: int = 256, *, shuffle: bool = False, augment: bool = False,
                seed: int = 0, device=None, shard: tuple[int, int] = (0, 1),
                memory_format=torch.contiguous_format) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Normalised batches ``(x, y)`` on ``device``. ``augment``: random crop (padding H/8) + horizontal flip
        for in-memory data (done on the device), RandomResizedCrop + flip for streamed data. ``shard=(rank,
        world)``: every rank walks the same order and reads only its share of each global batch."""
        rank, world = shard
        order = np.random.default_rng(seed).permutation(len(ds)) if shuffle else np.arange(len(ds))
        batches = [order[s:s + batch_size][rank::world] for s in range(0, len(ds), batch_size)]
        if isinstance(ds, FileDataset):
            yield from self._streamed(ds, batches, augment, seed, device, memory_format)
            return
        gen = torch.Generator(device=device or "cpu").manual_seed(seed * 131 + rank)
        for idx in batches:
            x = self.to_tensor(ds.images[idx], device)
            if augment:
                x = random_crop_flip(x, pad=max(1, x.shape[-1] // 8), generator=gen)
            y = None if ds.labels is None else torch.from_numpy(ds.labels[idx]).to(x.device, non_blocking=True)
            yield x.contiguous(memory_format=memory_format), y

    def _streamed(self, ds: FileDataset, batches, augment: bool, seed: int, device, memory_format):
        torch.manual_seed(seed)  # the workers' augmentation seeds derive from it
        pin = device is not None and torch.device(device).type == "cuda"
        loader = torch.utils.data.DataLoader(_Files(ds, train=augment), batch_sampler=batches,
                                             num_workers=self.workers, pin_memory=pin)
        for x, y in loader:
            yield self.to_tensor(x, device, memory_format, channels_first=True), y.to(device or "cpu",
                                                                                      non_blocking=True)


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Standard CIFAR augmentation on a batch, in one gather on the batch's device: zero-pad, random crop back
    to size, random horizontal flip."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dev = x.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(dev)
    flip = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(dev)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (n, h)
    cols = torch.arange(w, device=dev).expand(n, w)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - cols, cols)  # (n, w), reversed where flipped
    return padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


# ----------------------------------------------------------------------------------------------- loading
MODES = ("auto", "memory", "stream")
MEMORY_LIMIT_BYTES = 4 << 30  # auto: decode into memory up to this many bytes of uint8 pixels, stream beyond


def load_data(spec: str, input_size: tuple[int, int, int] = (3, 32, 32), *, random_size: int = 256,
              mode: str = "auto", workers: int | None = None) -> DataBundle:
    """Resolve a data spec (see module doc) into a :class:`DataBundle`.

    ``mode``: ``memory`` decodes every image once (cached), ``stream`` reads an ImageFolder from disk batch by
    batch, ``auto`` streams an ImageFolder whose decoded pixels would pass :data:`MEMORY_LIMIT_BYTES`."""
    if mode not in MODES:
        raise PrunekitError(f"--data-mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "stream" and not (os.path.isdir(spec) and not _is_cifar_dir(spec)):
        raise PrunekitError("--data-mode stream reads an ImageFolder folder (train/, test/); CIFAR-10, tarballs "
                            "and random data are decoded into memory")
    if spec == "random":
        return _random_bundle(input_size, random_size)
    if spec == "cifar10":
        return _cifar10_from_dir(data_dir())
    if os.path.isfile(spec) and spec.endswith((".tar.gz", ".tgz", ".tar")):
        return _from_tarball(spec, input_size)
    if os.path.isdir(spec):
        if _is_cifar_dir(spec):
            return _cifar10_from_dir(spec)
        default_workers = min(4, max(1, (os.cpu_count() or 2) - 1))
        return _from_image_folder(spec, input_size, mode, default_workers if workers is None else workers)
    raise PrunekitError(
        f"data {spec!r} not found: use cifar10, random, an ImageFolder root with train/ and test/, "
        "or a .tar.gz of one"
    )


def _is_cifar_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cifar-10-batches-py")) or os.path.isfile(
        os.path.join(path, "cifar10-jpeg.tar.gz"))


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


def _from_image_folder(root: str, input_size, mode: str = "auto", workers: int = 0) -> DataBundle:
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
    name = os.path.basename(root.rstrip("/"))
    n_images = sum(len(v) for v in entries.values())
    if mode == "stream" or (mode == "auto" and n_images * size[0] * size[1] * 3 > MEMORY_LIMIT_BYTES):
        return _streamed_folder(name, entries, size, workers)
    cached = _cache_path("folder", [p for split in entries.values() for _, p in split], size)
    z = _load_cached(cached)
    if z is not None:
        return _finish(name, z)
    arrays, classes = _decode_entries(entries, lambda p: p, size)
    z = {"train_x": arrays["train"][0], "train_y": arrays["train"][1], "test_x": arrays["test"][0],
         "test_y": arrays["test"][1], "num_classes": np.array(len(classes))}
    _save_cached(cached, z)
    return _finish(name, z)


def _streamed_folder(name: str, entries: dict, size: tuple[int, int], workers: int) -> DataBundle:
    """An ImageFolder read from disk batch by batch: nothing decoded up front, memory independent of its size."""
    classes = sorted({c for split in entries.values() for c, _ in split})
    cls_idx = {c: i for i, c in enumerate(classes)}
    split = {}
    for k, items in entries.items():
        items = sorted(items)
        split[k] = FileDataset([p for _, p in items], np.array([cls_idx[c] for c, _ in items], np.int64), size)
    tr_idx, va_idx = _split_per_class(split["train"].labels)
    test = split["test"] if len(split["test"]) else None
    return DataBundle(name, split["train"].subset(tr_idx), split["train"].subset(va_idx), test, len(classes),
                      workers=workers)
