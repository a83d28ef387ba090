"""Parameter and MAC counting, per layer and total.

MACs are multiply-accumulates of Conv2d and Linear layers (the paper's FLOPs are 2 × MACs); BatchNorm,
activations, pooling and additions are not counted. Parameters are all of the model's parameters.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn

from prunekit.runtimes.layers import LayerShape


@dataclass
class LayerCount:
    name: str
    type: str
    in_channels: int
    out_channels: int
    params: int
    macs: int


@dataclass
class ModelCount:
    params: int
    macs: int
    layers: list[LayerCount] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self, layers: bool = True) -> dict:
        d = {"params": self.params, "macs": self.macs, "flops": self.flops}
        if layers:
            d["layers"] = [asdict(layer) for layer in self.layers]
        return d


def _conv_weight_params(m: nn.Conv2d, out_c: int, in_c: int) -> int:
    kh, kw = m.kernel_size
    if m.groups > 1 and m.groups == m.in_channels == m.out_channels:  # depthwise
        return max(out_c, in_c) * kh * kw
    return out_c * (in_c // m.groups) * kh * kw


def trace_layers(model: nn.Module, input_size: tuple[int, int, int], visit) -> None:
    """One forward pass on zeros of ``input_size`` (eval mode, no grad) calling ``visit(name, module, input,
    output)`` for every Conv2d / Linear: the one walk behind positions, counts and latency-table shapes."""
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: visit(name, mod, inp[0], out))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def output_positions(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, int]:
    """Output positions (H·W for convs, tokens for linears) of every Conv2d / Linear, from one forward pass."""
    positions: dict[str, int] = {}

    def visit(name, mod, x, out):
        positions[name] = int(out[0, 0].numel()) if isinstance(mod, nn.Conv2d) else int(out[0].numel() // out.shape[-1])
    trace_layers(model, input_size, visit)
    return positions


def count_model(model: nn.Module, input_size: tuple[int, int, int]) -> ModelCount:
    """Total parameters and MACs of ``model`` at batch 1, with a row per Conv2d / Linear."""
    positions = output_positions(model, input_size)
    layers = []
    for name, m in model.named_modules():
        if name not in positions:
            continue
        if isinstance(m, nn.Conv2d):
            w = _conv_weight_params(m, m.out_channels, m.in_channels)
            b = m.out_channels if m.bias is not None else 0
            layers.append(LayerCount(name, "Conv2d", m.in_channels, m.out_channels, w + b, w * positions[name]))
        else:
            w = m.in_features * m.out_features
            b = m.out_features if m.bias is not None else 0
            layers.append(LayerCount(name, "Linear", m.in_features, m.out_features, w + b, w * positions[name]))
    return ModelCount(sum(p.numel() for p in model.parameters()), sum(layer.macs for layer in layers), layers)


def layer_shapes(model, input_size: tuple[int, int, int], batch: int = 1) -> dict[str, LayerShape]:
    """The shape of every Conv2d / Linear of ``model`` on inputs of ``input_size``, from one forward pass."""
    shapes: dict[str, LayerShape] = {}

    def visit(name, mod, x, out):
        if isinstance(mod, nn.Conv2d):
            pad = mod.padding if isinstance(mod.padding, tuple) else (0, 0)
            shapes[name] = LayerShape("conv", mod.in_channels, mod.out_channels, int(x.shape[-2]), int(x.shape[-1]),
                                      tuple(mod.kernel_size), tuple(mod.stride), tuple(pad), mod.groups, batch)
        else:
            tokens = int(np.prod(x.shape[1:-1])) if x.dim() > 2 else 1
            shapes[name] = LayerShape("linear", mod.in_features, mod.out_features, tokens, 1, batch=batch)
    trace_layers(model, input_size, visit)
    return shapes
