"""Prune → load → export → parity across architectures, at flops=0.4 on random data.

Every run proves, numerically: masked dense model == physically pruned model (inside ``prune``), the run
folder reloads to the same model (history replay, weights_only), and onnxruntime == PyTorch.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.deploy.export import export_onnx
from prunekit.core.metrics import count_model

from prunekit.models import list_models

# every built-in architecture of the registry (the CIFAR ResNets at their shallowest and deepest tested depth:
# resnet32 / 44 / 110 are the same code at other depths), plus torchvision models of each family prunekit claims
# (residual, bottleneck, inverted residual with SE, channel shuffle; plain VGG and MobileNetV2's inverted residuals
# are the built-in vgg16_bn and mobilenet_v2: torchvision's at 224² cost a minute for nothing more)
TORCHVISION = ["torchvision:resnet18", "torchvision:resnet50", "torchvision:mobilenet_v3_small",
               "torchvision:shufflenet_v2_x0_5"]  # a channel shuffle: what crosses it frozen, the branches pruned
ARCHS = [m for m in list_models() if m not in ("resnet32", "resnet44", "resnet110")] + TORCHVISION


@pytest.mark.parametrize("arch", ARCHS)
def test_prune_export_parity(arch, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "run"
    cfg = prunekit.PruneConfig(model=arch, data="random", target="flops=0.4", out=str(out), calib_images=16,
                               schedule="oneshot", verify_images=8, batch_size=16, speed_batches=())
    run = prunekit.prune(cfg)
    # target met; channel counts aligned to the runtime's block (round_to=auto), which costs some overshoot
    assert 0.4 <= run["reduction"]["macs"] < 0.6
    n = run["alignment"]["round_to"]
    assert n in (8, 16)
    assert all(r["out_after"] in (r["out_before"], *range(n, r["out_before"], n)) for r in run["layers"])
    assert run["verification"][0]["passed"]
    assert run["verification"][0]["max_abs_diff"] <= run["verification"][0]["allowed"]
    # the run folder holds only finished files, and run.json is what prune returned
    assert sorted(os.listdir(out)) == ["channels.png", "check_inputs.npz", "pruned.pt", "report.md", "run.json"]
    assert [c["check"] for c in run["verification"]] == ["masked == pruned", "pruned.pt reloads to the same model"]
    assert json.loads((out / "run.json").read_text())["pruned"] == run["pruned"]
    # reload without unpickling code: same size, same function
    model = prunekit.load(str(out))
    size = tuple(run["model"]["input_size"])
    count = count_model(model, size)
    assert (count.params, count.macs) == (run["pruned"]["params"], run["pruned"]["macs"])
    x = torch.randn(4, *size)
    report = export_onnx(model, x, str(tmp_path / "m.onnx"))
    assert report.passed and os.path.getsize(tmp_path / "m.onnx") == report.bytes
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    # the classifier keeps its outputs and no layer lost all its channels
    assert all(row["out_after"] > 0 and row["in_after"] > 0 for row in run["layers"])
    clf = run["model"]["classifier"]
    assert next(r for r in run["layers"] if r["layer"] == clf)["out_after"] == run["layers"][-1]["out_before"]


@pytest.mark.parametrize("arch,match", [
    ("torchvision:convnext_tiny", "LayerNorm|cannot be pruned exactly"),
])
def test_unsupported_models_get_a_clear_error(arch, match, tmp_path):
    cfg = prunekit.PruneConfig(model=arch, data="random", target="flops=0.3", out=str(tmp_path / "run"),
                               schedule="oneshot", calib_images=4, verify_images=2, batch_size=4)
    with pytest.raises(PrunekitError, match=match):
        prunekit.prune(cfg)
    assert not (tmp_path / "run").exists()
