"""The data a run reads, once loaded: in-memory (``ArrayDataset``) or streamed (``FileDataset``) splits and the
:class:`DataBundle` that normalises, augments and batches them on the training device."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from prunekit.data.augment import random_crop_flip
from prunekit.data.cache import decode_one

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VAL_FRACTION = 0.1


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
        return np.stack([decode_one(lambda p: p, self.paths[i], self.size) for i in idx]) if len(idx) else \
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
        global_batches = [order[s:s + batch_size] for s in range(0, len(ds), batch_size)]
        if world > 1:  # a short last batch with fewer images than ranks would leave a rank empty (a NaN loss)
            global_batches = [g for g in global_batches if len(g) >= world]
        batches = [g[rank::world] for g in global_batches]
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


def split_per_class(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): per class, in the given order, the last VAL_FRACTION are validation."""
    tr, va = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = int(round(len(idx) * VAL_FRACTION))
        tr.append(idx[:len(idx) - n_val])
        va.append(idx[len(idx) - n_val:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))
