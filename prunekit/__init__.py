"""prunekit: activation-based structured pruning of PyTorch CNNs, with physical surgery and verified ONNX export.

The public API is re-exported here lazily (``import prunekit`` stays fast; torch loads on first use)::

    import prunekit
    model, spec = prunekit.resolve_model("resnet56", weights="resnet56-cifar10jpeg.pt")
    run = prunekit.prune(prunekit.PruneConfig(model="resnet56", data="cifar10", target="flops=0.5", out="runs/r56"))
    pruned = prunekit.load("runs/r56")
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "PrunekitError": "errors",
    "ModelSpec": "models", "resolve_model": "models", "build_model": "models", "list_models": "models",
    "load_weights": "models",
    "load_data": "data", "DataBundle": "data",
    "build_graph": "graph", "find_groups": "graph", "ChannelGroup": "graph",
    "score_groups": "scoring", "CRITERIA": "scoring",
    "CostModel": "masks", "plan_for_target": "masks", "plan_for_threshold": "masks", "masked": "masks",
    "apply_plan": "surgery", "verify_masked_equals_pruned": "surgery",
    "count_model": "metrics",
    "export_onnx": "export",
    "evaluate": "train", "finetune": "train", "TrainSchedule": "train",
    "PruneConfig": "config", "OneShotConfig": "config", "SearchConfig": "config", "TrainingConfig": "config",
    "prune": "pipeline", "parse_target": "config", "resume_search": "search",
    "load": "rebuild", "save_pruned": "storage",
    "run_search": "search", "Controller": "policy", "PolicyConfig": "policy",
    "measure_onnx": "bench",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
