"""How a model spec becomes a module: :class:`ModelSpec`, :func:`resolve_model` (a spec string the caller
gives) and :func:`build_model` (a spec read back from a run folder, with the trust rules), weights loading."""
from __future__ import annotations

import importlib.util
import os
import zipfile
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from prunekit.errors import PrunekitError, describe, user_input
from prunekit.models.fold import fold_computed_weights
from prunekit.models.bridges import DEFAULT_IMAGENET_SIZE, build_timm, build_torchvision, timm_input_size
from prunekit.models.registry import get_entry, list_models




@dataclass
class ModelSpec:
    """How to rebuild the dense architecture. ``source``: builtin | torchvision | timm | file | pickle."""

    source: str
    name: str
    num_classes: int | None = None
    input_size: tuple[int, int, int] = DEFAULT_IMAGENET_SIZE
    classifier: str | None = None
    weights: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        d = dict(d)
        d["input_size"] = tuple(d["input_size"])
        return cls(**d)


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    """``"3,224,224"`` → ``(3, 224, 224)``; raises PrunekitError on anything else."""
    if text is None:
        return None
    parts = [p for p in str(text).replace("x", ",").split(",") if p.strip()]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise PrunekitError(f"input size must be C,H,W with positive integers (e.g. 3,224,224), got {text!r}")
    return dims  # type: ignore[return-value]


def find_classifier(model: nn.Module) -> str | None:
    """Name of the last Linear layer (else the last Conv2d): the classifier, which is never pruned."""
    last_linear = last_conv = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last_linear = name
        elif isinstance(m, nn.Conv2d):
            last_conv = name
    return last_linear or last_conv


def _is_pickle_path(name: str) -> bool:
    return name.endswith((".pt", ".pth", ".pkl")) and ":" not in os.path.basename(name)


def resolve_model(
    name: str,
    *,
    weights: str | None = None,
    input_size: tuple[int, int, int] | str | None = None,
    num_classes: int | None = None,
    trust_pickle: bool = False,
    trust_code: bool = True,
) -> tuple[nn.Module, ModelSpec]:
    """Turn a spec string (see module doc) into ``(model in eval mode, ModelSpec)``, loading ``weights``.

    ``trust_code`` (default True: the caller named the file) allows importing a ``file.py:factory``; pass
    False when the spec string was read from a file the caller did not write."""
    if isinstance(input_size, str):
        input_size = parse_input_size(input_size)
    if not name or not isinstance(name, str):
        raise PrunekitError("no model given")
    entry = get_entry(name)
    state = read_state_dict(weights) if weights else None
    if entry is not None:
        spec = ModelSpec("builtin", name, num_classes or entry.num_classes, input_size or entry.input_size,
                         entry.classifier, weights)
    elif name.startswith("torchvision:"):
        spec = ModelSpec("torchvision", name.split(":", 1)[1], num_classes, input_size or DEFAULT_IMAGENET_SIZE,
                         None, weights)
    elif name.startswith("timm:"):
        tname = name.split(":", 1)[1]
        spec = ModelSpec("timm", tname, num_classes, input_size or timm_input_size(tname), None, weights)
    elif ".py:" in name:
        spec = ModelSpec("file", name, num_classes, input_size or DEFAULT_IMAGENET_SIZE, None, weights)
    elif _is_pickle_path(name):
        spec = ModelSpec("pickle", name, num_classes, input_size or DEFAULT_IMAGENET_SIZE, None, weights)
    elif os.path.exists(name):
        raise PrunekitError(f"{name} is a {'folder' if os.path.isdir(name) else 'file'}, not a model spec: use a "
                            "built-in name, torchvision:NAME, timm:NAME, path/to/file.py:factory or a saved module .pt")
    elif os.sep in name or name.startswith("."):
        raise PrunekitError(f"no such file or run folder: {name}")
    else:
        raise PrunekitError(
            f"unknown model {name!r}: use a built-in name ({', '.join(list_models())}), "
            "torchvision:NAME, timm:NAME, path/to/file.py:factory or a saved module path/to/model.pt"
        )
    if state is not None and spec.num_classes is None and spec.source in ("torchvision", "timm"):
        spec.num_classes = _classes_in_state(build_model(spec, trust_pickle=trust_pickle), state)
    model = build_model(spec, trust_pickle=trust_pickle, trust_code=trust_code, fold=False)
    spec.classifier = spec.classifier or find_classifier(model)
    if state is not None:
        load_state(model, state, weights)
    fold_computed_weights(model)  # after the user's weights: they are in the layers' own format
    return model.eval(), spec


def load_folded(spec: ModelSpec, state: dict, what: str, **trust) -> dict:
    """``state`` (a user's file, in the architecture's own format) as the state dict of the model prunekit
    works on (with weight-computing convs folded, :mod:`prunekit.models.fold`)."""
    model = build_model(spec, fold=False, **trust)
    load_state(model, state, what)
    fold_computed_weights(model)
    return model.state_dict()


def build_model(spec: ModelSpec, *, trust_pickle: bool = False, trust_code: bool = False,
                named_by: str | None = None, fold: bool = True) -> nn.Module:
    """Build the dense architecture of ``spec`` (random init, or the pickled module's own weights), with its
    weight-computing convs folded into plain ones (:mod:`prunekit.models.fold`) unless ``fold`` is False (to
    load a state dict in the architecture's own format first).

    A ``file`` spec is imported only with ``trust_code``, a ``pickle`` spec unpickled only with
    ``trust_pickle``; ``named_by`` (the run folder the spec came from) goes into the refusal."""
    model = _architecture(spec, trust_pickle, trust_code, named_by)
    if fold:
        fold_computed_weights(model)
    return model


def _architecture(spec: ModelSpec, trust_pickle: bool, trust_code: bool, named_by: str | None) -> nn.Module:
    if spec.source == "builtin":
        entry = get_entry(spec.name)
        if entry is None:
            raise PrunekitError(f"unknown built-in model {spec.name!r}")
        return entry.factory(num_classes=spec.num_classes or entry.num_classes)
    if spec.source == "torchvision":
        return build_torchvision(spec.name, spec.num_classes)
    if spec.source == "timm":
        return build_timm(spec.name, spec.num_classes)
    if spec.source == "file":
        if not trust_code:
            where = f"{named_by} names" if named_by else "this spec names"
            raise PrunekitError(
                f"{where} model code in {spec.name.rpartition(':')[0]}: rebuilding it would import and run that "
                "file. Pass --trust-code (trust_code=True) only if you trust it")
        return _build_from_file(spec.name)
    if spec.source == "pickle":
        return _load_pickled_module(spec.name, trust_pickle, named_by)
    raise PrunekitError(f"unknown model source {spec.source!r}")


def _build_from_file(ref: str) -> nn.Module:
    path, _, factory_name = ref.rpartition(":")
    if not os.path.isfile(path):
        raise PrunekitError(f"model file not found: {path}")
    mod_name = "prunekit_user_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise PrunekitError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    with user_input(f"importing {path} failed"):  # the user's code failed: say where
        spec.loader.exec_module(module)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise PrunekitError(f"{path} has no function {factory_name!r}")
    with user_input(f"{ref}() failed"):
        model = factory()
    if not isinstance(model, nn.Module):
        raise PrunekitError(f"{ref} returned {type(model).__name__}, not an nn.Module")
    return model


def is_torch_file(path: str) -> bool:
    """A file ``torch.save`` could have written: a zip archive, or a legacy pickle (protocol byte 0x80)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return zipfile.is_zipfile(path) or (len(head) == 2 and head[0] == 0x80)


def _load_pickled_module(path: str, trust_pickle: bool, named_by: str | None = None) -> nn.Module:
    if not os.path.isfile(path):
        raise PrunekitError(f"model file not found: {path}")
    if not is_torch_file(path):
        raise PrunekitError(f"{path} is not a PyTorch file (neither a torch.save archive nor a pickle)")
    if not trust_pickle:
        where = f"{named_by} names {path}, which" if named_by else path
        raise PrunekitError(
            f"{where} is a pickled module: loading it runs code stored in the file. "
            "Pass --trust-pickle (trust_pickle=True) only if you trust its origin, or give an architecture "
            "name with --weights STATE_DICT instead"
        )
    with user_input(f"cannot read {path}"):
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, nn.Module):
        raise PrunekitError(f"{path} holds a {type(obj).__name__}, not a pickled nn.Module")
    return obj


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise PrunekitError(f"weights file not found: {path}")
    if os.path.getsize(path) == 0:
        raise PrunekitError(f"cannot read weights {path}: the file is empty")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PrunekitError(f"cannot read weights {path} as a state dict (weights_only=True): {describe(e)}") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PrunekitError(f"{path} does not hold a state dict (name → tensor)")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _classes_in_state(model: nn.Module, state: dict) -> int | None:
    clf = find_classifier(model)
    w = state.get(f"{clf}.weight") if clf else None
    return int(w.shape[0]) if w is not None else None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """``load_state_dict(strict=True)`` with the mismatch summarised in one line."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = [ln.strip() for ln in str(e).splitlines() if ln.strip()][1:3]
        raise PrunekitError(f"weights {source} do not fit the model: {' '.join(first)[:300] or describe(e)}") from e
    except Exception as e:  # a module's own _load_from_state_dict failed
        raise PrunekitError(f"weights {source} do not load into the model: {describe(e)}") from e


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """Load a state-dict file (``{'state_dict': …}`` or plain, ``module.`` prefix allowed) strictly."""
    load_state(model, read_state_dict(path), path)
    return model
