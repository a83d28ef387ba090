"""Model zoos by name: ``torchvision:NAME`` (any torchvision classification or segmentation model: a segmenter
returns its ``out`` and ``aux`` class maps as a dict) and ``timm:NAME`` (any timm model; timm is the optional
extra ``prunekit[timm]``). Random init: weights come from ``--weights``, so nothing is downloaded. A zoo name is a
library's code, not a user's file: rebuilding one from a run folder needs no ``--trust-code``."""
from __future__ import annotations

import torch.nn as nn

from prunekit.errors import PrunekitError, user_input

DEFAULT_IMAGENET_SIZE = (3, 224, 224)


def _torchvision_branches() -> None:
    """torchvision's residual blocks whose branch a plan may drop (:mod:`prunekit.models.extensions`)."""
    from torchvision.models import mobilenetv2, resnet

    from prunekit.models.extensions import BRANCH_KINDS, BranchSpec, register_branch

    if resnet.BasicBlock in BRANCH_KINDS:
        return
    register_branch(resnet.BasicBlock, lambda b: BranchSpec(
        inner="conv1", layers=("conv1", "bn1", "conv2", "bn2"), tail=("conv2", "bn2"),
        shortcut="downsample" if b.downsample is not None else None, post="relu"))
    register_branch(resnet.Bottleneck, lambda b: BranchSpec(
        inner="conv1", layers=("conv1", "bn1", "conv2", "bn2", "conv3", "bn3"),
        tail=("conv2", "bn2", "relu", "conv3", "bn3"),
        shortcut="downsample" if b.downsample is not None else None, post="relu"))

    def inverted(b):
        if not b.use_res_connect or len(b.conv) != 4:  # identity shortcut and an expand conv that opens the branch
            return None
        return BranchSpec(inner="conv.0.0", layers=("conv.0.0", "conv.0.1", "conv.1.0", "conv.1.1", "conv.2", "conv.3"),
                          tail=("conv.2", "conv.3"), shortcut=None, post="none")
    register_branch(mobilenetv2.InvertedResidual, inverted)


def build_torchvision(name: str, num_classes: int | None) -> nn.Module:
    import torchvision

    _torchvision_branches()
    segmentation = torchvision.models.list_models(module=torchvision.models.segmentation)
    if name in segmentation:  # their out (and aux) class maps, as a dict: named outputs
        kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes or 21}
        if not name.startswith("lraspp"):
            kwargs["aux_loss"] = True
        return torchvision.models.get_model(name, **kwargs)
    if name not in torchvision.models.list_models(module=torchvision.models):
        detection = torchvision.models.list_models(module=torchvision.models.detection)
        if name in detection:
            raise PrunekitError(f"torchvision:{name} is a detector: its forward resizes, decodes boxes and runs NMS, "
                                "which no plan can prune through; prune its network part (a module returning the "
                                "raw head maps, see examples/detector/)")
        raise PrunekitError(f"unknown torchvision model {name!r} (classification: torchvision.models.list_models(); "
                            f"segmentation: {', '.join(segmentation[:3])}, …)")
    kwargs = {"weights": None}
    if num_classes:
        kwargs["num_classes"] = num_classes
    if name.startswith(("inception", "googlenet")):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    return torchvision.models.get_model(name, **kwargs)


def _timm():
    try:
        import timm
    except ImportError:
        raise PrunekitError("timm:NAME needs timm, an optional extra: pip install 'prunekit[timm]'") from None
    return timm


def timm_input_size(name: str) -> tuple[int, int, int]:
    """The input size of the model's default pretrained config (what its weights were trained at), else 224²."""
    timm = _timm()
    if not timm.is_model(name):
        raise PrunekitError(f"unknown timm model {name!r} (timm.list_models() lists the names)")
    cfg = timm.get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return tuple(int(d) for d in size) if size and len(size) == 3 else DEFAULT_IMAGENET_SIZE


def _timm_split_owners() -> None:
    """timm's MixedConv2d splits its input with sizes it keeps in ``splits``: rewritten from its pruned convs."""
    from timm.layers.mixed_conv2d import MixedConv2d

    from prunekit.models.extensions import SPLIT_OWNERS, register_split_owner

    def sync(m: MixedConv2d) -> None:
        convs = list(m.values())
        m.splits = [c.in_channels for c in convs]
        m.in_channels, m.out_channels = sum(m.splits), sum(c.out_channels for c in convs)

    if MixedConv2d not in SPLIT_OWNERS:
        register_split_owner(MixedConv2d, sync)


def build_timm(name: str, num_classes: int | None) -> nn.Module:
    timm = _timm()
    _timm_split_owners()
    if not timm.is_model(name):
        raise PrunekitError(f"unknown timm model {name!r} (timm.list_models() lists the names)")
    kwargs = {"num_classes": num_classes} if num_classes else {}
    with user_input(f"timm could not build {name!r}"):
        return timm.create_model(name, pretrained=False, **kwargs)
