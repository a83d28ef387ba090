"""The adaptive search end to end on real CIFAR-10 images (a small subset of the shared JPEGs, so rounds are
seconds), with ResNet-20 and the shared weights: every target kind delivers a model that meets it; a killed
search resumes to the same end; the fixed-rate baseline; two data-parallel CPU processes."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

import prunekit
from prunekit.deploy.speed import measure_onnx
from prunekit.deploy.export import export_onnx
from prunekit.models import resolve_model

from tests.conftest import shared_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def small_cifar(tmp_path_factory, cifar_tarball):
    """300 train + 100 test real images per class, taken from the shared tarball (ImageFolder layout)."""
    out = tmp_path_factory.mktemp("data") / "cifar10-small.tar.gz"
    keep = {"train": 300, "test": 100}
    counts: dict = {}
    with tarfile.open(cifar_tarball) as src, tarfile.open(out, "w:gz") as dst:
        for m in src:
            parts = m.name.strip("./").split("/")
            if not m.isfile() or len(parts) < 3 or parts[-3] not in keep:
                continue
            key = (parts[-3], parts[-2])
            if counts.get(key, 0) < keep[parts[-3]]:
                counts[key] = counts.get(key, 0) + 1
                dst.addfile(m, io.BytesIO(src.extractfile(m).read()))
    return str(out)


@pytest.fixture(scope="session")
def r20_weights():
    return shared_file("weights", "resnet20-cifar10jpeg.pt")


def config(small_cifar, r20_weights, out, target, **kw):
    base = dict(model="resnet20", weights=r20_weights, data=small_cifar, target=target, out=str(out),
                epochs_per_round=0.15, max_rounds=3, lam=0.1, calib_images=64, batch_size=32, export=False,
                train_lr=0.05, bn_images=128)  # a round trains on ~400 images: re-estimate BatchNorm on fewer
    base.update(kw)
    return prunekit.PruneConfig(**base)


def rounds(out):
    return [json.loads(line) for line in open(os.path.join(out, "rounds.jsonl"))]


@pytest.mark.parametrize("target,kind", [("params=0.3", "params"), ("flops=0.3", "macs")])
def test_budget_targets_are_met(small_cifar, r20_weights, tmp_path, target, kind):
    run = prunekit.prune(config(small_cifar, r20_weights, tmp_path / "run", target))
    assert run["reduction"][kind] >= 0.3 and run["target"]["met"]
    rows = rounds(tmp_path / "run")
    assert rows[0]["round"] == 0 and rows[0]["accepted"] and len(rows) >= 2
    assert run["search"]["chosen_round"] in [r["round"] for r in rows]
    for f in ("report.md", "rounds.png", "channels.png"):
        assert os.path.getsize(tmp_path / "run" / f) > 0
    model = prunekit.load(str(tmp_path / "run"))
    assert sum(p.numel() for p in model.parameters()) == run["pruned"]["params"]


def test_accuracy_target(small_cifar, r20_weights, tmp_path):
    run = prunekit.prune(config(small_cifar, r20_weights, tmp_path / "run", "acc=3.0"))
    chosen = next(r for r in rounds(tmp_path / "run") if r["round"] == run["search"]["chosen_round"])
    assert chosen["accepted"]
    assert run["accuracy"]["val_dense"] - run["accuracy"]["val_pruned"] <= 3.0


def test_latency_target_and_export(small_cifar, r20_weights, tmp_path):
    dense, spec = resolve_model("resnet20", weights=r20_weights)
    import torch

    export_onnx(dense, torch.randn(2, 3, 32, 32), str(tmp_path / "dense.onnx"), exporter="torchscript")
    dense_ms = measure_onnx(str(tmp_path / "dense.onnx"), (3, 32, 32), runs=50).p50_ms
    goal = round(dense_ms * 0.8, 3)
    run = prunekit.prune(config(small_cifar, r20_weights, tmp_path / "run", f"latency={goal}", export=True))
    assert run["target"]["met"]
    chosen = next(r for r in rounds(tmp_path / "run") if r["round"] == run["search"]["chosen_round"])
    assert chosen["latency_ms"] <= goal
    assert run["export"]["passed"] and os.path.isfile(tmp_path / "run" / "model.onnx")


def test_fixed_rate_schedule(small_cifar, r20_weights, tmp_path):
    run = prunekit.prune(config(small_cifar, r20_weights, tmp_path / "run", "params=0.2", schedule="fixed",
                                rate=0.1, criterion="l1", max_rounds=4))
    rows = rounds(tmp_path / "run")[1:]
    assert run["reduction"]["params"] >= 0.2
    total = 16 + 3 * 16 + 32 + 3 * 32 + 64 + 3 * 64  # prunable channels of ResNet-20 (12 groups)
    assert rows[0]["removed_channels"] >= 0.1 * total


def _cli(*args):
    return [sys.executable, "-m", "prunekit.cli", *map(str, args)]


def test_killed_search_resumes_to_the_same_end(small_cifar, r20_weights, tmp_path):
    common = ["prune", "resnet20", "--weights", r20_weights, "--data", small_cifar, "--target", "params=0.4",
              "--epochs-per-round", "0.15", "--max-rounds", "3", "--lam", "0.1", "--calib-images", "64",
              "--batch-size", "32", "--train-lr", "0.05", "--bn-images", "128", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_cli(*common, "--out", tmp_path / "ref"), env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen(_cli(*common, "--out", tmp_path / "run"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    jsonl = tmp_path / "run" / "rounds.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not jsonl.exists() or len(jsonl.read_text().splitlines()) < 2):
        time.sleep(0.2)
    time.sleep(1.0)  # inside round 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "run.json").exists()
    res = subprocess.run(_cli("prune", "--resume", tmp_path / "run", "--quiet"), env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    a, b = rounds(tmp_path / "ref"), rounds(tmp_path / "run")
    keys = ("round", "T", "params", "macs", "removed_channels", "accepted", "decision", "val_accuracy")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]
    ra, rb = (json.load(open(p / "run.json")) for p in (tmp_path / "ref", tmp_path / "run"))
    assert ra["search"]["chosen_round"] == rb["search"]["chosen_round"] and ra["pruned"] == rb["pruned"]


def test_data_parallel_two_cpu_processes(small_cifar, r20_weights, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "prunekit.cli", "prune", "resnet20", "--weights", r20_weights, "--data", small_cifar,
           "--target", "params=0.3", "--epochs-per-round", "0.15", "--max-rounds", "2", "--lam", "0.15",
           "--calib-images", "64", "--batch-size", "32", "--train-lr", "0.05", "--bn-images", "128",
           "--out", tmp_path / "run", "--log-format", "json"]
    res = subprocess.run(list(map(str, cmd)), env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = json.load(open(tmp_path / "run" / "run.json"))
    assert run["reduction"]["params"] >= 0.3
    # only rank 0 reports: each round is announced once
    done = [line for line in res.stderr.splitlines() if '"event": "round_done"' in line]
    assert len(done) == len(rounds(tmp_path / "run")) - 1


def test_weight_rewinding_restarts_rounds_from_the_checkpoint(small_cifar, r20_weights, tmp_path):
    """With --rewind-checkpoint, a round's surviving weights are the checkpoint's (lr 0: nothing moves them)."""
    import torch

    early = shared_file("weights", "original", "resnet20-12fca82f.th")
    prunekit.prune(config(small_cifar, r20_weights, tmp_path / "run", "params=0.2", schedule="fixed", rate=0.1,
                          max_rounds=1, rewind_checkpoint=early, train_lr=0.0, round_to=1))
    round1 = torch.load(tmp_path / "run" / "search" / "round-0001.pt", weights_only=True)["state_dict"]
    w = round1["layer2.1.conv2.weight"]
    src = torch.load(early, map_location="cpu", weights_only=True)["state_dict"]["module.layer2.1.conv2.weight"]
    dense = torch.load(r20_weights, map_location="cpu", weights_only=True)["state_dict"]["layer2.1.conv2.weight"]

    def kernels(t):  # every 3×3 kernel as a tuple
        return {tuple(k.flatten().tolist()) for k in t.reshape(-1, 3, 3)}

    assert w.shape[0] * w.shape[1] < src.shape[0] * src.shape[1]  # the layer was pruned
    assert kernels(w) <= kernels(src) and not kernels(w) & kernels(dense)
