"""``prunekit models``: the built-in architectures and the zoos prunekit builds by name."""
from __future__ import annotations

from prunekit.cli.app import main
from prunekit.cli.output import say


@main.command("models")
def list_models_cmd():
    """List the built-in architectures.

    \b
    Example:
      prunekit models
    """
    from prunekit.models import list_models
    from prunekit.models.registry import get_entry

    for name in list_models():
        e = get_entry(name)
        say(f"{name:<14} input {','.join(map(str, e.input_size))}  classes {e.num_classes}  "
                   f"{(e.factory.__doc__ or '').strip().splitlines()[0]}")
    say("torchvision:NAME  any torchvision classification or segmentation model, e.g. torchvision:resnet50, "
        "torchvision:lraspp_mobilenet_v3_large")
    say("timm:NAME  any timm model (pip install 'prunekit[timm]'); path/to/file.py:factory  your own")
