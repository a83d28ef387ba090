"""Fold convolutions that compute their weight at every call into plain ``nn.Conv2d`` layers.

Weight-standardised convolutions (timm's ``StdConv2d`` / ``ScaledStdConv2d`` in NFNets and BiT ResNets, with a
per-output-channel ``gain``) normalise each filter over its fan-in on every forward. Removing an input channel
would change every remaining filter's statistics, so channel removal on them is not exact, and torch-pruning
knows nothing of the extra ``gain`` (the pruned model would not run). At inference the weight such a layer
computes is a constant: this module reads it from the layer's own ``forward`` (the one ``F.conv2d`` call it
makes, captured with a ``TorchFunctionMode``) and swaps in a plain ``Conv2d`` holding it — identical outputs,
and prunable like any conv. Retraining then trains the folded weights directly.

A layer is folded only when its forward makes exactly one ``conv2d`` call, on its own input unchanged, with its
own stride / padding / dilation / groups, and returns that call's result; anything else (a layer that pads its
input first, as ``Conv2dSame`` does) is left as it is.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class _Capture(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.conv2d or func is torch.conv2d:
            self.calls.append((args, kwargs, out))
        return out


def _computes_its_weight(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and type(module).forward is not nn.Conv2d.forward


def _folded(module: nn.Conv2d) -> nn.Conv2d | None:
    """A plain conv with the weight ``module`` computes, or None when its forward is not one plain conv2d."""
    kh, kw = module.kernel_size
    dh, dw = module.dilation
    x = torch.zeros(1, module.in_channels, dh * (kh - 1) + 1, dw * (kw - 1) + 1,
                    dtype=module.weight.dtype, device=module.weight.device)
    capture = _Capture()
    with torch.no_grad(), capture:
        y = module(x)
    if len(capture.calls) != 1:
        return None
    args, kwargs, result = capture.calls[0]
    if y is not result:  # something after the conv (a scale, an activation): not a plain conv
        return None
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    call = dict(zip(names, args)) | kwargs
    same = (call.get("input") is x and _pair(call.get("stride", 1)) == module.stride
            and _pair(call.get("dilation", 1)) == module.dilation and call.get("groups", 1) == module.groups
            and not isinstance(call.get("padding", 0), str) and _pair(call.get("padding", 0)) == module.padding
            and module.padding_mode == "zeros")
    if not same:
        return None
    weight, bias = call["weight"], call.get("bias")
    plain = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                      padding=module.padding, dilation=module.dilation, groups=module.groups, bias=bias is not None,
                      device=module.weight.device, dtype=module.weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if bias is not None:
            plain.bias.copy_(bias)
    plain.train(module.training)
    return plain


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def fold_computed_weights(model: nn.Module) -> list[str]:
    """Swap every conv of ``model`` that computes its weight for the plain conv it equals (in place); the names
    of the layers folded."""
    folded = []
    for name, module in list(model.named_modules()):
        if not _computes_its_weight(module):
            continue
        plain = _folded(module)
        if plain is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, plain)
        folded.append(name)
    return folded
