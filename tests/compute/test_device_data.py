"""Retraining where users retrain (issue 11): device and AMP options, streamed ImageFolder data whose memory
does not grow with the number of images, a cache that sees a changed folder, JSON progress lines. GPU tests
are marked and skip without CUDA."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from prunekit.cli import main
from prunekit.data import load_data, random_crop_flip
from prunekit.compute.device import resolve_compute
from prunekit.errors import PrunekitError

CUDA = torch.cuda.is_available()


def make_folder(root, n_per_class: int, size: int = 32, classes: int = 10, fmt: str = "png"):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_per_class), ("test", max(1, n_per_class // 5))):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i:05d}.{fmt}")
    return str(root)


@pytest.mark.skipif(CUDA, reason="checks the errors on a machine without a GPU")
@pytest.mark.parametrize("args,match", [
    (["--device", "cuda"], "no CUDA GPU"), (["--device", "cuda:7"], "no CUDA GPU"),
    (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["--device", "cpu", "--amp", "fp16"], "needs a CUDA device"),
])
def test_device_mistakes(tmp_path, args, match):
    r = CliRunner().invoke(main, ["prune", "resnet20", "--data", "random", "--target", "flops=0.3", "--schedule",
                                  "oneshot", "--out", str(tmp_path / "run"), *args])
    assert r.exit_code == 2 and r.output.startswith("error:") and match in r.output, r.output
    assert not (tmp_path / "run").exists()


def test_auto_is_the_cpu_here_and_recorded(tmp_path):
    if CUDA:
        pytest.skip("a GPU is present")
    from prunekit.runtimes import cpu_info

    native = cpu_info().native_bf16
    assert resolve_compute("auto").device.type == "cpu" and resolve_compute("auto").amp == ("bf16" if native else "off")
    r = CliRunner().invoke(main, ["prune", "resnet20", "--data", "random", "--target", "flops=0.3", "--schedule",
                                  "oneshot", "--speed-batches", "none", "--out", str(tmp_path / "run"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["compute"] == {
        "device": "cpu", "amp": "bf16" if native else "off",
        "memory_format": "channels_last" if native else "contiguous", "cpu": cpu_info().model, "native_bf16": native}


def test_vectorised_crop_flip_is_a_crop_of_the_padded_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_crop_flip(x, pad=1, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    moved = random_crop_flip(x.repeat(32, 1, 1, 1), pad=1, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(moved, x.repeat(32, 1, 1, 1))  # it does augment


def test_cache_sees_an_added_image(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", 10, classes=2)
    first = load_data(root, (3, 32, 32), mode="memory")
    Image.new("RGB", (32, 32)).save(tmp_path / "ds" / "train" / "c0" / "99999.png")
    again = load_data(root, (3, 32, 32), mode="memory")
    assert len(again.train) + len(again.val) == len(first.train) + len(first.val) + 1


def test_stream_mode_matches_memory_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", 10, size=40, classes=3)
    mem, st = (load_data(root, (3, 32, 32), mode=m, workers=0) for m in ("memory", "stream"))
    assert st.streamed and not mem.streamed
    assert (len(st.train), len(st.val), len(st.test)) == (len(mem.train), len(mem.val), len(mem.test))
    xm, ym = next(mem.batches(mem.test, 8))
    xs, ys = next(st.batches(st.test, 8))
    assert torch.equal(ym, ys) and xm.shape == xs.shape and float((xm - xs).abs().mean()) < 0.05
    xa, _ = next(st.batches(st.train, 8, shuffle=True, augment=True))
    assert xa.shape == (8, 3, 32, 32)
    with pytest.raises(PrunekitError, match="stream reads an ImageFolder"):
        load_data("random", (3, 32, 32), mode="stream")


RSS_SCRIPT = """
import resource, sys, torch, torch.nn as nn
from prunekit.data import load_data
from prunekit.compute.train import TrainSchedule, evaluate, train
bundle = load_data(sys.argv[1], (3, 224, 224), mode="stream", workers=0)
model = nn.Sequential(nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
train(model, bundle, TrainSchedule(epochs=1, lr=0.01, batch_size=16))
acc = evaluate(model, bundle, bundle.val, batch_size=16)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(bundle.train), acc)
"""


@pytest.mark.slow
def test_streaming_memory_does_not_grow_with_the_dataset(tmp_path):
    """Train + evaluate on streamed 224² ImageFolders of 80 and 480 images: peak RSS stays (decoding all 480
    into memory would add about 70 MB)."""
    peaks = []
    for n in (20, 120):
        root = make_folder(tmp_path / f"ds{n}", n, size=256, classes=4, fmt="jpg")
        res = subprocess.run([sys.executable, "-c", RSS_SCRIPT, root], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "PRUNEKIT_CACHE": str(tmp_path / "cache")})
        assert res.returncode == 0, res.stderr[-2000:]
        rss_kb, n_train, acc = res.stdout.split()
        peaks.append(int(rss_kb) / 1024)
        assert int(n_train) > 0 and acc != "None"
    assert peaks[1] - peaks[0] < 30, peaks  # MB


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_training_on_cuda_with_bf16(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "ds", 12, classes=10)
    r = CliRunner().invoke(main, ["prune", "resnet20", "--data", root, "--target", "flops=0.3", "--schedule",
                                  "oneshot", "--finetune-epochs", "1", "--device", "cuda", "--out",
                                  str(tmp_path / "run"), "--quiet"])
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["compute"]["device"].startswith("cuda") and run["finetune"]["amp"] == "bf16"
    assert run["verification"][0]["passed"]
