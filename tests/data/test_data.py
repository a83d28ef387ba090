"""Data specs, the validation split rule, the decode cache, synthetic data."""
from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from prunekit.data import load_data
from prunekit.errors import PrunekitError


def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def tiny_tarball(tmp_path):
    """2 classes × 20 train images (+ 3 test each), ImageFolder layout, like cifar10-jpeg.tar.gz."""
    path = tmp_path / "tiny.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", 20), ("test", 3)):
            for c, color in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
                for i in range(n):
                    data = _jpeg(color)
                    info = tarfile.TarInfo(f"{split}/{c}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_tarball_split_rule_and_cache(tiny_tarball, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    b = load_data(tiny_tarball)
    assert (len(b.train), len(b.val), len(b.test), b.num_classes) == (36, 4, 6, 2)
    # the last 10 % of each class (by file name) is validation: 2 per class
    assert list(b.val.labels) == [0, 0, 1, 1]
    assert b.train.images.shape == (36, 32, 32, 3) and b.train.images.dtype == np.uint8
    assert os.listdir(tmp_path / "cache")
    import prunekit.data.cache as data_mod

    monkeypatch.setattr(data_mod, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    again = load_data(tiny_tarball)
    assert np.array_equal(again.train.images, b.train.images)


def test_image_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    for split, n in (("train", 10), ("val", 2)):
        for c in ("a", "b", "c"):
            d = tmp_path / "ds" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (80, 60), (i * 20, 0, 0)).save(d / f"{i}.png")
    b = load_data(str(tmp_path / "ds"), (3, 48, 48))
    assert b.train.images.shape[1:] == (48, 48, 3)
    assert (len(b.train), len(b.val), len(b.test), b.num_classes) == (27, 3, 6, 3)


def test_random_data_has_no_labels():
    b = load_data("random", (3, 40, 40))
    assert b.synthetic and not b.has_labels and b.train.images.shape[1:] == (40, 40, 3)
    x, y = next(b.batches(b.calibration(8), 4))
    assert x.shape == (4, 3, 40, 40) and y is None


def test_augmentation_keeps_shape_and_is_seeded():
    b = load_data("random", (3, 32, 32))
    a1 = next(b.batches(b.train, 8, shuffle=True, augment=True, seed=3))[0]
    a2 = next(b.batches(b.train, 8, shuffle=True, augment=True, seed=3))[0]
    plain = next(b.batches(b.train, 8, shuffle=True, augment=False, seed=3))[0]
    assert a1.shape == (8, 3, 32, 32) and np.array_equal(a1.numpy(), a2.numpy())
    assert not np.array_equal(a1.numpy(), plain.numpy())  # a no-op augmentation would fail here
    other = next(b.batches(b.train, 8, shuffle=True, augment=True, seed=4))[0]
    assert not np.array_equal(a1.numpy(), other.numpy())


@pytest.mark.parametrize("spec", ["no/such/dir", "cifar100"])
def test_bad_data_spec(spec):
    with pytest.raises(PrunekitError, match="not found"):
        load_data(spec)


def test_corrupt_tarball(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(PrunekitError, match="cannot read"):
        load_data(str(bad))


def test_cifar10_from_shared_jpegs(cifar):
    assert (len(cifar.train), len(cifar.val), len(cifar.test), cifar.num_classes) == (45000, 5000, 10000, 10)
    assert np.bincount(cifar.val.labels).tolist() == [500] * 10
