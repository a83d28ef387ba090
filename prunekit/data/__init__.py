"""Datasets, splits and loaders: the bundle a run reads (``bundle``), augmentation (``augment``), the decode
cache (``cache``), one reader per source behind :func:`load_data` (``readers``), and the checks that a model and
its data fit (``inputs``). This file only re-exports.

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
from prunekit.data.bundle import (
    CIFAR10_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VAL_FRACTION,
    ArrayDataset,
    DataBundle,
    Dataset,
    FileDataset,
    split_per_class,
)
from prunekit.data.augment import random_crop_flip
from prunekit.data.cache import cache_dir, data_dir
from prunekit.data.readers import MEMORY_LIMIT_BYTES, MODES, load_data

__all__ = ["CIFAR10_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "MEMORY_LIMIT_BYTES", "MODES", "VAL_FRACTION",
           "ArrayDataset", "DataBundle", "Dataset", "FileDataset", "cache_dir", "data_dir", "load_data",
           "random_crop_flip", "split_per_class"]
