"""One reader per data source behind one factory, :func:`load_data` (the ``--data`` spec, see
:mod:`prunekit.data`): random inputs, CIFAR-10 (torchvision's folder or our JPEG tarball), a ``.tar.gz`` in
ImageFolder layout, an ImageFolder decoded into memory or streamed from disk.

Every labelled source ends the same way: entries ``split → [(class, file)]`` numbered by one class index
(:func:`class_index`), decoded through the cache (:func:`prunekit.data.cache.cached_arrays`) and split
train / validation by :func:`prunekit.data.bundle.split_per_class` (:func:`_bundle`).
"""
from __future__ import annotations

import os
import tarfile

import numpy as np

from prunekit.config.choices import CHOICES, check_choice
from prunekit.data.bundle import ArrayDataset, DataBundle, FileDataset, split_per_class
from prunekit.data.cache import cached_arrays, data_dir, decode_one
from prunekit.errors import PrunekitError

MODES = CHOICES["data_mode"]
MEMORY_LIMIT_BYTES = 4 << 30  # auto: decode into memory up to this many bytes of uint8 pixels, stream beyond
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

Entries = dict[str, list[tuple[str, str]]]  # split → [(class name, member path)]


def load_data(spec: str, input_size: tuple[int, int, int] = (3, 32, 32), *, random_size: int = 256,
              mode: str = "auto", workers: int | None = None, labels: str = "use") -> DataBundle:
    """Resolve a data spec (see :mod:`prunekit.data`) into a :class:`DataBundle`.

    ``mode``: ``memory`` decodes every image once (cached), ``stream`` reads an ImageFolder from disk batch by
    batch, ``auto`` streams an ImageFolder whose decoded pixels would pass :data:`MEMORY_LIMIT_BYTES`.
    ``labels="ignore"``: the training and validation splits lose their labels (nothing trains or decides on
    them: recovery is distillation from the dense model alone); the test split keeps its labels, so the test
    accuracy of a label-free run can still be reported."""
    check_choice("data_mode", mode)
    check_choice("labels", labels)
    bundle = _load(spec, input_size, random_size, mode, workers)
    return without_training_labels(bundle) if labels == "ignore" else bundle


def without_training_labels(bundle: DataBundle) -> DataBundle:
    import dataclasses

    def strip(ds):
        return None if ds is None else dataclasses.replace(ds, labels=None)
    return dataclasses.replace(bundle, train=strip(bundle.train), val=strip(bundle.val))


def _load(spec: str, input_size, random_size: int, mode: str, workers: int | None) -> DataBundle:
    if mode == "stream" and not (os.path.isdir(spec) and not is_cifar_dir(spec)):
        raise PrunekitError("--data-mode stream reads an ImageFolder folder (train/, test/); CIFAR-10, tarballs "
                            "and random data are decoded into memory")
    if spec == "random":
        return random_bundle(input_size, random_size)
    if spec == "cifar10":
        return cifar10_from_dir(data_dir())
    if os.path.isfile(spec) and spec.endswith((".tar.gz", ".tgz", ".tar")):
        return from_tarball(spec, input_size)
    if os.path.isdir(spec):
        if is_cifar_dir(spec):
            return cifar10_from_dir(spec)
        if not os.path.isdir(os.path.join(spec, "train")):
            return unlabelled_folder(spec, input_size)
        default_workers = min(4, max(1, (os.cpu_count() or 2) - 1))
        return from_image_folder(spec, input_size, mode, default_workers if workers is None else workers)
    raise PrunekitError(
        f"data {spec!r} not found: use cifar10, random, an ImageFolder root with train/ and test/, a folder of "
        "unlabelled images, or a .tar.gz of either"
    )


def is_cifar_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cifar-10-batches-py")) or os.path.isfile(
        os.path.join(path, "cifar10-jpeg.tar.gz"))


def random_bundle(input_size, n: int) -> DataBundle:
    c, h, w = input_size
    if c != 3:
        raise PrunekitError(f"random data makes RGB images; the model expects {c} channels")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    ds = ArrayDataset(imgs, None)
    return DataBundle("random", ds, None, ds, None, synthetic=True)


def cifar10_from_dir(root: str) -> DataBundle:
    official = os.path.join(root, "cifar-10-batches-py")
    tarball = os.path.join(root, "cifar10-jpeg.tar.gz")
    if os.path.isfile(tarball) and not os.path.isdir(official):
        return from_tarball(tarball, (3, 32, 32), name="cifar10")
    import torchvision

    try:
        train = torchvision.datasets.CIFAR10(root, train=True, download=not os.path.isdir(official))
        test = torchvision.datasets.CIFAR10(root, train=False, download=False)
    except Exception as e:
        raise PrunekitError(
            f"CIFAR-10 not found under {root} and could not be downloaded ({type(e).__name__}); "
            "set PRUNEKIT_DATA to a folder holding cifar-10-batches-py/ or cifar10-jpeg.tar.gz"
        ) from e
    arrays = {"train_x": np.asarray(train.data), "train_y": np.asarray(train.targets, dtype=np.int64),
              "test_x": np.asarray(test.data), "test_y": np.asarray(test.targets, dtype=np.int64),
              "num_classes": np.array(10)}
    return _bundle("cifar10", arrays)


def class_index(entries: Entries) -> dict[str, int]:
    """Class name → label: the names of every split, sorted (ImageFolder's convention)."""
    return {c: i for i, c in enumerate(sorted({c for split in entries.values() for c, _ in split}))}


def _labelled(items: list[tuple[str, str]], classes: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """(members, labels) of one split; within a class, members in sorted order."""
    items = sorted(items)
    return [m for _, m in items], np.array([classes[c] for c, _ in items], dtype=np.int64)


def _decode_entries(entries: Entries, read, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Decode ``entries`` (``read(member)`` → bytes or a path) into the cached arrays' layout."""
    classes = class_index(entries)
    arrays = {"num_classes": np.array(len(classes))}
    for split, items in entries.items():
        members, labels = _labelled(items, classes)
        arrays[f"{split}_x"] = (np.stack([decode_one(read, m, size) for m in members]) if members
                                else np.zeros((0, *size, 3), np.uint8))
        arrays[f"{split}_y"] = labels
    return arrays


def _bundle(name: str, z: dict[str, np.ndarray]) -> DataBundle:
    full = ArrayDataset(z["train_x"], z["train_y"])
    tr_idx, va_idx = split_per_class(z["train_y"])
    test = ArrayDataset(z["test_x"], z["test_y"]) if len(z["test_x"]) else None
    return DataBundle(name, full.subset(tr_idx), full.subset(va_idx), test, int(z["num_classes"]))


def _split_of(parts: list[str]) -> str | None:
    if len(parts) >= 3 and parts[-3] in ("train", "test", "val") and parts[-1].lower().endswith(IMAGE_EXT):
        return parts[-3]
    return None


def from_tarball(path: str, input_size, name: str | None = None) -> DataBundle:
    size = tuple(input_size[1:])
    name = name or ("cifar10" if os.path.basename(path).startswith("cifar10") else os.path.basename(path))

    def decode_all():
        try:
            with tarfile.open(path) as tar:
                members = {m.name: m for m in tar.getmembers() if m.isfile()}
                entries: Entries = {"train": [], "test": []}
                for mname in members:
                    parts = mname.strip("./").split("/")
                    split = _split_of(parts)
                    if split:
                        entries["test" if split == "val" and not entries["test"] else split].append(
                            (parts[-2], mname))
                if not entries["train"]:  # no train/<class>/ layout: unlabelled images, wherever they are
                    images = sorted(m for m in members if m.lower().endswith(IMAGE_EXT))
                    if not images:
                        raise PrunekitError(f"{path} holds no images ({', '.join(IMAGE_EXT)})")
                    return {"all_x": np.stack([decode_one(lambda m: tar.extractfile(members[m]).read(), m, size)
                                               for m in images])}
                return _decode_entries(entries, lambda m: tar.extractfile(members[m]).read(), size)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise PrunekitError(f"cannot read {path}: {e}") from e
    arrays = cached_arrays("tar", [path], size, decode_all)
    return _unlabelled(name, arrays["all_x"]) if "all_x" in arrays else _bundle(name, arrays)


HELD_OUT_EVERY = 10  # unlabelled data: every 10th image (by path) is held out, for fidelity to the dense model


def unlabelled_folder(root: str, input_size) -> DataBundle:
    """A folder of images without class folders (any depth, sorted by path), decoded into memory: the images a
    segmenter or detector sees where it is deployed."""
    size = tuple(input_size[1:])
    paths = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files
                   if f.lower().endswith(IMAGE_EXT))
    if not paths:
        raise PrunekitError(f"{root} holds no images ({', '.join(IMAGE_EXT)}) and no train/ test/ ImageFolder")
    arrays = cached_arrays("unlabelled", paths, size,
                           lambda: {"all_x": np.stack([decode_one(lambda p: p, p, size) for p in paths])})
    return _unlabelled(os.path.basename(root.rstrip("/")), arrays["all_x"])


def _unlabelled(name: str, images: np.ndarray) -> DataBundle:
    """Unlabelled images: every :data:`HELD_OUT_EVERY`-th is the held-out split (``test``), another
    :data:`HELD_OUT_EVERY`-th the validation split (what a search judges its rounds on: ``fidelity=``), the rest
    train."""
    i = np.arange(len(images)) % HELD_OUT_EVERY
    held, val = i == HELD_OUT_EVERY - 1, i == HELD_OUT_EVERY // 2 - 1
    train = ~(held | val)
    if held.sum() == 0 or val.sum() == 0 or train.sum() == 0:
        raise PrunekitError(f"{name}: {len(images)} images are too few (at least {HELD_OUT_EVERY} are needed)")
    return DataBundle(name, ArrayDataset(images[train], None), ArrayDataset(images[val], None),
                      ArrayDataset(images[held], None), None)


def from_image_folder(root: str, input_size, mode: str = "auto", workers: int = 0) -> DataBundle:
    train_dir = os.path.join(root, "train")
    test_dir = next((os.path.join(root, s) for s in ("test", "val") if os.path.isdir(os.path.join(root, s))), None)
    if not os.path.isdir(train_dir) or test_dir is None:
        raise PrunekitError(f"{root} is not an ImageFolder root: it needs train/ and test/ (or val/) subfolders")
    size = tuple(input_size[1:])
    entries: Entries = {}
    for split, d in (("train", train_dir), ("test", test_dir)):
        entries[split] = [(c, os.path.join(d, c, f)) for c in sorted(os.listdir(d)) if os.path.isdir(os.path.join(d, c))
                          for f in sorted(os.listdir(os.path.join(d, c))) if f.lower().endswith(IMAGE_EXT)]
    if not entries["train"]:
        raise PrunekitError(f"{train_dir} holds no images in class subfolders")
    name = os.path.basename(root.rstrip("/"))
    n_images = sum(len(v) for v in entries.values())
    if mode == "stream" or (mode == "auto" and n_images * size[0] * size[1] * 3 > MEMORY_LIMIT_BYTES):
        return streamed_folder(name, entries, size, workers)
    sources = [p for split in entries.values() for _, p in split]
    return _bundle(name, cached_arrays("folder", sources, size, lambda: _decode_entries(entries, lambda p: p, size)))


def streamed_folder(name: str, entries: Entries, size: tuple[int, int], workers: int) -> DataBundle:
    """An ImageFolder read from disk batch by batch: nothing decoded up front, memory independent of its size."""
    classes = class_index(entries)
    split = {k: FileDataset(*_labelled(items, classes), size) for k, items in entries.items()}
    tr_idx, va_idx = split_per_class(split["train"].labels)
    test = split["test"] if len(split["test"]) else None
    return DataBundle(name, split["train"].subset(tr_idx), split["train"].subset(va_idx), test, len(classes),
                      workers=workers)
