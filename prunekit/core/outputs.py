"""Which layers make a model's outputs (:func:`output_layers`): the channels a plan must never remove. Naming
the outputs themselves is :mod:`prunekit.outputs` (shared by every layer)."""
from __future__ import annotations

import torch

from prunekit.outputs import named_outputs


def output_layers(model: torch.nn.Module, input_size: tuple[int, ...]) -> dict[str, str]:
    """Layer name → the output whose channels it produces: for every output, walking back through autograd from
    the output to the nearest conv / linear / BatchNorm on each path (ops in between — an upsampling, an add, a
    flatten — keep the channels that layer made). Those layers' output channels are what the model exposes; a
    plan must not remove them."""
    import torch.nn as nn

    by_fn: dict = {}
    kinds = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)

    def record(name):
        def hook(mod, inp, out):
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                by_fn[out.grad_fn] = name
        return hook
    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, kinds)]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = model(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    found: dict[str, str] = {}
    for name, tensor in named_outputs(out):
        stack, seen = [tensor.grad_fn], set()
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            if fn in by_fn:
                found.setdefault(by_fn[fn], name)
                continue
            stack += [f for f, _ in fn.next_functions]
    return found
