"""Training at the CPU's native precision (issue 24): --amp auto takes bf16 autocast + channels_last where the CPU
has bf16 units and fp32 elsewhere, --amp bf16 is refused (one error line) where it would be emulated, bf16
training lowers the loss and hands back fp32 weights, and a minutes budget ends the fine-tune on time."""
from __future__ import annotations

import time

import pytest
import torch
from click.testing import CliRunner

from prunekit.cli import main
from prunekit.compute import device
from prunekit.compute.device import resolve_compute
from prunekit.errors import PrunekitError
from prunekit.runtimes import machine

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(CUDA, reason="checks the CPU's decisions (a GPU would be chosen by auto)")


def fake_cpu(monkeypatch, flags):
    info = machine.CpuInfo("Fake CPU", "x86_64", 2, frozenset(flags))
    monkeypatch.setattr(device, "cpu_info", lambda: info)


@pytest.mark.parametrize("flags,amp,expected", [
    ({"avx512f", "avx512_bf16"}, "auto", "bf16"), ({"amx_bf16", "amx_tile"}, "auto", "bf16"),
    ({"avx512f"}, "auto", "off"), ({"avx2"}, "auto", "off"), ({"avx512_bf16"}, "off", "off"),
    ({"avx512_bf16"}, "bf16", "bf16"),
])
def test_auto_follows_the_cpus_bf16_units(monkeypatch, flags, amp, expected):
    fake_cpu(monkeypatch, flags)
    compute = resolve_compute("cpu", amp)
    assert compute.amp == expected
    assert compute.memory_format == (torch.channels_last if expected == "bf16" else torch.contiguous_format)
    assert compute.to_dict()["native_bf16"] == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_bf16_without_bf16_units_is_one_error_line(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, {"avx512f", "avx2"})  # AVX-512 without BF16: oneDNN would emulate it
    with pytest.raises(PrunekitError, match="no native bf16 units"):
        resolve_compute("cpu", "bf16")
    r = CliRunner().invoke(main, ["prune", "resnet20", "--data", "random", "--target", "flops=0.3", "--schedule",
                                  "oneshot", "--device", "cpu", "--amp", "bf16", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and r.output.startswith("error: --amp bf16: this CPU (Fake CPU) has no native bf16")
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def _tiny_bundle():
    from prunekit.data import ArrayDataset, DataBundle

    g = torch.Generator().manual_seed(0)
    images = (torch.rand(256, 16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
    labels = (images.reshape(256, -1).mean(1) > images.reshape(256, -1).mean()).astype("int64")  # learnable
    ds = ArrayDataset(images, labels)
    return DataBundle("tiny", ds, None, ds, num_classes=2)


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))


@pytest.mark.skipif(not machine.cpu_info().native_bf16, reason="needs a CPU with native bf16")
def test_bf16_training_lowers_the_loss_and_hands_back_fp32_weights():
    from prunekit.compute.train import TrainSchedule, train

    bundle, model = _tiny_bundle(), _tiny_model()
    compute = resolve_compute("cpu", "bf16")
    cfg = TrainSchedule(epochs=4, lr=0.05, batch_size=32, seed=0)
    before = torch.nn.functional.cross_entropy(model(bundle.tensor(bundle.train)), torch.as_tensor(
        bundle.train.labels)).item()
    summary = train(model, bundle, cfg, compute)
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(model.eval()(bundle.tensor(bundle.train)), torch.as_tensor(
            bundle.train.labels)).item()
    assert summary["amp"] == "bf16" and after < before
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())  # back from channels_last


def test_a_minutes_budget_ends_the_finetune_on_time():
    from prunekit.compute.train import TrainSchedule, train

    bundle, model = _tiny_bundle(), _tiny_model()
    t0 = time.perf_counter()
    summary = train(model, bundle, TrainSchedule(epochs=0, minutes=0.02, batch_size=8, seed=0),
                    resolve_compute("cpu", "off"))
    spent = time.perf_counter() - t0
    assert 1.0 <= summary["seconds"] < 1.2 + 1.0 and spent < 3.0  # 1.2 s budget, one step past it at most
    assert summary["minutes"] == 0.02 and summary["steps"] > 5 and summary["epochs_done"] > 0
    capped = train(_tiny_model(), bundle, TrainSchedule(epochs=0.25, minutes=5, batch_size=8, seed=0),
                   resolve_compute("cpu", "off"))
    assert capped["steps"] == 8  # the epochs end it first: a quarter of 32 steps
