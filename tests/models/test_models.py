"""Built-in architectures, torchvision bridge, user models, weight loading and its errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunekit.errors import PrunekitError
from prunekit.models import build_model, list_models, load_weights, resolve_model
from prunekit.models.cifar_resnet import OptionAShortcut

from tests.conftest import shared_file

# Parameter counts of the classic CIFAR ResNets (He et al. 2016: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M); the
# 20 and 56 counts are those of the shared weight files, the others follow by 97,216 per block per stage.
RESNET_PARAMS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
                 "resnet110": 1_727_962}


@pytest.mark.parametrize("name", sorted(RESNET_PARAMS))
def test_cifar_resnet_param_counts(name):
    model, spec = resolve_model(name)
    assert sum(p.numel() for p in model.parameters()) == RESNET_PARAMS[name]
    assert spec.input_size == (3, 32, 32) and spec.classifier == "linear"


@pytest.mark.parametrize("name", ["vgg16_bn", "mobilenet_v2"])
def test_other_builtins_run(name):
    model, spec = resolve_model(name)
    assert model(torch.randn(2, *spec.input_size)).shape == (2, 10)


def test_registry_lists_builtins():
    assert {"resnet20", "resnet56", "resnet110", "vgg16_bn", "mobilenet_v2"} <= set(list_models())


@pytest.mark.parametrize("in_ch,out_ch,size", [(16, 32, 32), (32, 64, 16), (16, 32, 7)])
def test_option_a_shortcut_is_exactly_the_padded_slice(in_ch, out_ch, size):
    x = torch.randn(3, in_ch, size, size) * 50
    pad = (out_ch - in_ch) // 2
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))
    assert torch.equal(OptionAShortcut(in_ch, out_ch)(x), expected)


@pytest.mark.parametrize("arch,rel", [
    ("resnet20", ("weights", "resnet20-cifar10jpeg.pt")),
    ("resnet56", ("weights", "resnet56-cifar10jpeg.pt")),
    ("resnet20", ("weights", "original", "resnet20-12fca82f.th")),
    ("resnet56", ("weights", "original", "resnet56-4bfd9763.th")),
])
def test_shared_weights_load_strictly(arch, rel):
    path = shared_file(*rel)
    model, _ = resolve_model(arch, weights=path)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    key = next(k for k in state if k.endswith("layer3.0.conv1.weight"))
    assert torch.equal(model.layer3[0].conv1.weight, state[key])


def test_torchvision_by_name():
    model, spec = resolve_model("torchvision:resnet18", num_classes=7)
    assert spec.source == "torchvision" and spec.input_size == (3, 224, 224) and spec.classifier == "fc"
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_torchvision_num_classes_from_weights(tmp_path):
    w = tmp_path / "w.pt"
    torch.save(build_model(resolve_model("torchvision:mobilenet_v3_small", num_classes=5)[1]).state_dict(), w)
    model, spec = resolve_model("torchvision:mobilenet_v3_small", weights=str(w))
    assert spec.num_classes == 5


def test_user_file_factory(tmp_path):
    f = tmp_path / "mynet.py"
    f.write_text("import torch.nn as nn\n"
                 "def make():\n    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),"
                 " nn.Flatten(), nn.Linear(8, 4))\n")
    model, spec = resolve_model(f"{f}:make", input_size="3,16,16")
    assert spec.source == "file" and spec.classifier == "4" and spec.input_size == (3, 16, 16)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 4)


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(build_model(resolve_model("resnet20")[1]), path)
    with pytest.raises(PrunekitError, match="trust-pickle"):
        resolve_model(str(path))
    model, spec = resolve_model(str(path), trust_pickle=True, input_size=(3, 32, 32))
    assert spec.source == "pickle" and model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("bad", ["resnet21", "torchvision:not_a_model", "nofile.py:make", "missing.pt"])
def test_bad_model_names(bad):
    with pytest.raises(PrunekitError):
        resolve_model(bad)


def test_bad_weights(tmp_path):
    with pytest.raises(PrunekitError, match="not found"):
        resolve_model("resnet20", weights=str(tmp_path / "none.pt"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(PrunekitError, match="cannot read"):
        resolve_model("resnet20", weights=str(corrupt))
    other = tmp_path / "r56.pt"
    torch.save(build_model(resolve_model("resnet56")[1]).state_dict(), other)
    with pytest.raises(PrunekitError, match="do not fit"):
        load_weights(build_model(resolve_model("resnet20")[1]), str(other))
