"""Model specs and how to build them: built-in CIFAR models, torchvision models, a user's own code.

A :class:`ModelSpec` is plain data (JSON- and ``weights_only``-safe) that rebuilds the *dense* architecture.
Spec strings accepted by :func:`resolve_model`:

- ``resnet20`` … ``resnet110``, ``vgg16_bn``, ``mobilenet_v2``: built-in CIFAR-10 models (see ``list_models()``)
- ``torchvision:NAME``: any torchvision classification model, e.g. ``torchvision:resnet50``
- ``timm:NAME``: any timm model (the optional extra ``prunekit[timm]``), e.g. ``timm:efficientnet_b0``; input size
  from its pretrained config
- ``path/to/file.py:factory``: a function in the user's file returning an ``nn.Module`` (imports the file)
- ``path/to/model.pt``: a whole module saved with ``torch.save``; unpickling runs code from the file, so it
  needs ``trust_pickle=True``

Trust: a spec string the caller passes names code the caller chose, so ``resolve_model`` imports a
``file.py:factory`` it is given. A spec read back from a file (a run folder) is another matter:
:func:`build_model` refuses a ``file`` spec unless ``trust_code=True`` and a ``pickle`` spec unless
``trust_pickle=True``, naming the file either would run.
"""
from prunekit.models import cifar_mobilenetv2, cifar_resnet, cifar_vgg  # noqa: F401 (register the built-ins)
from prunekit.models.cifar_resnet import OptionAShortcut
from prunekit.models.factory import (
    DEFAULT_IMAGENET_SIZE,
    ModelSpec,
    build_model,
    find_classifier,
    is_torch_file,
    load_folded,
    load_state,
    load_weights,
    parse_input_size,
    read_state_dict,
    resolve_model,
)
from prunekit.models.registry import get_entry, list_models, register_model

__all__ = ["DEFAULT_IMAGENET_SIZE", "ModelSpec", "OptionAShortcut", "build_model", "find_classifier", "get_entry",
           "is_torch_file", "list_models", "load_folded", "load_state", "load_weights", "parse_input_size",
           "read_state_dict", "register_model", "resolve_model"]
