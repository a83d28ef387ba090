"""The CUDA paths of issue 19. Their decisions are checked here on the CPU with a faked device or process group
(the backend follows --device, cuda:N under torchrun, native bf16 only, no empty shard, plans broadcast,
one-shot refused under torchrun); the ``gpu``-marked tests run them for real where a GPU exists (skipped here)."""
from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import prunekit
from prunekit.compute import ddp, device
from prunekit.data import ArrayDataset, DataBundle
from prunekit.errors import PrunekitError

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


# ------------------------------------------------------------------------------------ decisions, on the CPU
@pytest.mark.parametrize("spec,backend", [("cpu", "gloo"), ("cuda", "nccl"), ("auto", "nccl")])
def test_the_process_group_backend_follows_the_device_not_the_hardware(spec, backend, monkeypatch):
    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: chosen.append(("device", i)))
    monkeypatch.setattr(ddp.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(ddp.dist, "init_process_group", lambda b: chosen.append(("backend", b)))
    assert ddp.init_from_env(spec) == backend
    assert ("backend", backend) in chosen
    assert (("device", 0) in chosen) == (backend == "nccl")


def test_a_rank_without_its_gpu_is_one_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(ddp.dist, "is_initialized", lambda: False)
    with pytest.raises(PrunekitError, match="LOCAL_RANK 1 but this machine has 1 CUDA GPU"):
        ddp.init_from_env("cuda")


def test_cuda_n_under_torchrun_is_the_ranks_own_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device.cuda_index("cuda") == 1 and device.cuda_index("cuda:1") == 1
    with pytest.raises(PrunekitError, match="each rank trains on the GPU of its LOCAL_RANK"):
        device.cuda_index("cuda:0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert device.cuda_index("cuda:3") == 3  # outside torchrun: the GPU named


@pytest.mark.parametrize("native,amp", [(True, "bf16"), (False, "fp16")])
def test_amp_auto_takes_bf16_only_where_it_is_native(native, amp, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert device.resolve_compute("cuda", "auto").amp == amp


def test_fp32_on_cuda_means_no_tf32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    device.resolve_compute("cuda", "off")
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False


def test_no_rank_gets_an_empty_shard():
    ds = ArrayDataset(np.zeros((10, 4, 4, 3), np.uint8), np.zeros(10, np.int64))
    bundle = DataBundle("t", ds, None, None, 2)
    for world in (2, 3, 4):
        per_rank = [[len(x) for x, _ in bundle.batches(ds, 4, shard=(r, world))] for r in range(world)]
        assert all(n > 0 for counts in per_rank for n in counts), (world, per_rank)
        assert len({len(c) for c in per_rank}) == 1  # every rank takes the same number of steps


def test_one_shot_under_torchrun_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(ddp, "distributed", lambda: (0, 2))
    cfg = prunekit.PruneConfig(model="resnet20", data="random", target="flops=0.3", schedule="oneshot",
                               out=str(tmp_path / "r"))
    with pytest.raises(PrunekitError, match="runs in one process"):
        prunekit.prune(cfg)
    assert not (tmp_path / "r").exists()


def test_synced_batchnorm_trains_like_batchnorm_and_gives_the_modules_back():
    """--sync-bn swaps every BatchNorm for a SyncBatchNorm on the same tensors for the loop: outside a process
    group the steps are BatchNorm's bit for bit, what they change stays in the original modules, and no
    SyncBatchNorm is left for surgery, export or saving."""
    from prunekit.models import resolve_model

    torch.manual_seed(0)
    plain, _ = resolve_model("resnet20", num_classes=10)
    synced = copy.deepcopy(plain)
    originals = {n: m for n, m in synced.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for model, ctx in ((plain, contextlib.nullcontext()), (synced, ddp.synced_batchnorm(synced))):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        model.train()
        with ctx:
            if model is synced:
                assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == len(originals)
            for _ in range(3):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
    assert {n: m for n, m in synced.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)} \
        == originals and not any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    a, b = plain.state_dict(), synced.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(originals["bn1"].num_batches_tracked) == 3 and all(m.training for m in originals.values())


def test_sync_bn_is_refused_on_the_cpu_before_any_work(tmp_path):
    from click.testing import CliRunner
    from prunekit.cli import main

    res = CliRunner().invoke(main, ["prune", "resnet20", "--data", "random", "--target", "flops=0.3", "--schedule",
                                    "oneshot", "--device", "cpu", "--sync-bn", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--sync-bn needs --device cuda" in res.output, res.output
    assert not (tmp_path / "r").exists()


def test_broadcast_object_outside_torchrun_is_the_object():
    plan = {"a": [1, 2]}
    assert ddp.broadcast_object((plan, 0.5)) == (plan, 0.5)


def test_the_cuda_latency_table_key_names_the_gpu_and_libraries(monkeypatch):
    from prunekit.runtimes import get_runtime, torch_eager

    cuda = get_runtime("cuda")
    monkeypatch.setattr(torch_eager, "cuda_identity", lambda: "GPU-A|sm90|torch x|cuda y|cudnn z")
    a = cuda.key(1)
    monkeypatch.setattr(torch_eager, "cuda_identity", lambda: "GPU-B|sm80|torch x|cuda y|cudnn z")
    assert cuda.key(1) != a
    ort = get_runtime("onnxruntime-cpu")
    assert ort.key(1) == ort.key(1) != ort.key(2)


# ------------------------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_training_on_cuda_lowers_the_loss_and_evaluates_in_fp32(amp):
    from prunekit.compute.train import TrainSchedule, evaluate, train
    from prunekit.models import resolve_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (512, 32, 32, 3), dtype=np.uint8)
    y = (x[:, :16].mean(axis=(1, 2, 3)) > x[:, 16:].mean(axis=(1, 2, 3))).astype(np.int64)  # learnable
    ds = ArrayDataset(x, y)
    bundle = DataBundle("t", ds, ds, ds, 2)
    model, _ = resolve_model("resnet20", num_classes=2)
    compute = device.resolve_compute("cuda", amp)
    before = evaluate(model, bundle, ds, compute=compute)
    summary = train(model, bundle, TrainSchedule(epochs=3, lr=0.05, batch_size=64), compute=compute)
    after = evaluate(model, bundle, ds, compute=compute)
    assert summary["amp"] == amp and summary["last_loss"] == summary["last_loss"]  # not NaN
    assert after > before
    cpu = evaluate(model, bundle, ds)  # fp32 on CUDA vs the CPU: the same figure within rounding
    assert abs(cpu - after) <= 0.5


@pytest.mark.gpu
@gpu
def test_cuda_n_is_made_the_current_device():
    n = torch.cuda.device_count() - 1
    compute = device.resolve_compute(f"cuda:{n}", "auto")
    assert compute.device == torch.device("cuda", n) and torch.cuda.current_device() == n


@pytest.mark.gpu
@gpu
def test_the_cuda_latency_table_times_positive_and_caches_per_gpu(tmp_path, monkeypatch):
    from prunekit.deploy.latency_table import LatencyTable, LayerShape

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    table = LatencyTable("cuda", 1)
    small = table.ms(LayerShape("conv", 16, 16, 32, 32, (3, 3), (1, 1), (1, 1), 1, 64))
    big = table.ms(LayerShape("conv", 64, 64, 32, 32, (3, 3), (1, 1), (1, 1), 1, 64))
    assert 0 < small < big
    table.save()
    assert os.path.isfile(table.path)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("procs,sync_bn", [(1, False), (2, False), (2, True)])
def test_a_search_round_under_torchrun_on_nccl(procs, sync_bn, tmp_path):
    if torch.cuda.device_count() < procs:
        pytest.skip(f"needs {procs} GPUs")
    from tests.conftest import shared_file

    data, weights = shared_file("data", "cifar10-jpeg.tar.gz"), shared_file("weights", "resnet20-cifar10jpeg.pt")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "-m", "prunekit.cli",
           "prune", "resnet20", "--weights", weights, "--data", data, "--target", "flops=0.3", "--device", "cuda",
           "--max-rounds", "1", "--epochs-per-round", "0.05", "--val-images", "500",
           "--out", str(tmp_path / "run"), "--quiet"] + (["--sync-bn"] if sync_bn else [])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "run" / "run.json").is_file()
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert rounds[-1]["val_accuracy"] is not None
