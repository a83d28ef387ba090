"""``prunekit inspect``: a model's layers, sizes and prunable channel groups."""
from __future__ import annotations

import click

from prunekit.cli.app import main, model_options
from prunekit.cli.output import log_format_option, say, say_json


@main.command()
@log_format_option
@click.argument("model")
@model_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def inspect(model, weights, input_size, num_classes, trust_pickle, as_json):
    """Layers, channels, params, MACs and prunable channel groups of MODEL.

    \b
    MODEL: built-in name, torchvision:NAME, path/file.py:factory or path.pt.
    Example:
      prunekit inspect resnet20 --weights ../shared/weights/resnet20-cifar10jpeg.pt
      prunekit inspect torchvision:mobilenet_v2 --json
    """
    from prunekit.core.graph import find_groups
    from prunekit.core.trace import build_graph
    from prunekit.core.metrics import count_model
    from prunekit.outputs import describe_outputs
    from prunekit.models import resolve_model
    from prunekit.data.inputs import check_input_size

    m, spec = resolve_model(model, weights=weights, input_size=input_size, num_classes=num_classes,
                            trust_pickle=trust_pickle)
    outputs = describe_outputs(check_input_size(m, spec.input_size))
    count = count_model(m, spec.input_size)
    groups = find_groups(m, build_graph(m, spec.input_size), spec.classifier, input_size=spec.input_size)
    info = {"model": spec.to_dict(), "outputs": outputs, **count.to_dict(),
            "groups": [{"root": g.root, "channels": g.channels, "prunable": g.prunable, "frozen": g.reason,
                        "members": [f"{mm.module}:{mm.kind}" for mm in g.members]} for g in groups]}
    if as_json:
        say_json(info)
        return
    say(f"{model}  input {','.join(map(str, spec.input_size))}  outputs {outputs}  classifier {spec.classifier}")
    say(f"params {count.params:,}   MACs {count.macs:,}   (FLOPs = 2 × MACs = {count.flops:,})")
    say(f"\n{'layer':<40} {'type':<7} {'in':>6} {'out':>6} {'params':>12} {'MACs':>15}")
    for layer in count.layers:
        say(f"{layer.name:<40} {layer.type:<7} {layer.in_channels:>6} {layer.out_channels:>6} "
                   f"{layer.params:>12,} {layer.macs:>15,}")
    n_prunable = sum(g.prunable for g in groups)
    say(f"\n{len(groups)} channel groups, {n_prunable} prunable")
    for g in groups:
        state = "prunable" if g.prunable else f"frozen: {g.reason or 'a single channel'}"
        say(f"  {g.root:<38} {g.channels:>5} ch  {len(g.members):>3} members  {state}")
