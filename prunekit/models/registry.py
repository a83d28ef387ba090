"""Registry of built-in architectures: name → factory, input size, classifier layer."""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

import torch.nn as nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    num_classes: int
    classifier: str  # module name of the classifier (never pruned)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, input_size: tuple[int, int, int], num_classes: int, classifier: str):
    """Decorator: register ``factory(num_classes=...) -> nn.Module`` under ``name``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, factory, tuple(input_size), num_classes, classifier)
        return factory

    return wrap


def get_entry(name: str) -> ModelEntry | None:
    return _REGISTRY.get(name)


def list_models() -> list[str]:
    return sorted(_REGISTRY)
