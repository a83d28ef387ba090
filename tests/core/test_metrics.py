"""One count of params and MACs, checked against PyTorch's own FLOP counter and against the ONNX graph."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from prunekit.deploy.speed import onnx_info
from prunekit.deploy.export import export_onnx
from prunekit.core.costmodel import CostModel
from prunekit.core.metrics import count_model
from prunekit.models import resolve_model


@pytest.mark.parametrize("name", ["torchvision:resnet18", "torchvision:mobilenet_v2", "vgg16_bn", "resnet20"])
def test_macs_match_torch_flop_counter_and_onnx(name, tmp_path):
    size = (3, 32, 32) if name in ("resnet20", "vgg16_bn") else (3, 64, 64)
    model, spec = resolve_model(name, input_size=size)
    count = count_model(model, size)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(torch.zeros(1, *size))
    flops = fc.get_total_flops()
    if name == "resnet20":  # PyTorch counts the option-A shortcut's 1×1 selection conv; prunekit does not
        flops -= 2 * (16 * 32 * 16 * 16 + 32 * 64 * 8 * 8)
    assert count.macs == flops // 2
    assert count.params == sum(p.numel() for p in model.parameters())
    assert CostModel.build(model, [], size).predict({}) == (count.params, count.macs)
    export_onnx(model, torch.randn(2, *size), str(tmp_path / "m.onnx"), exporter="torchscript")
    assert onnx_info(str(tmp_path / "m.onnx"))["macs"] == count.macs
