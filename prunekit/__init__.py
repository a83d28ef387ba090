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
    "build_graph": "core.graph", "find_groups": "core.graph", "ChannelGroup": "core.graph",
    "score_groups": "core.scoring", "CRITERIA": "core.scoring",
    "CostModel": "core.costmodel", "plan_for_target": "core.planning", "plan_for_threshold": "core.planning",
    "masked": "core.masking",
    "apply_plan": "core.surgery", "verify_masked_equals_pruned": "core.surgery",
    "count_model": "core.metrics",
    "export_onnx": "deploy.export",
    "evaluate": "compute.train", "finetune": "compute.train", "TrainSchedule": "compute.train",
    "PruneConfig": "config", "OneShotConfig": "config", "SearchConfig": "config", "TrainingConfig": "config",
    "prune": "jobs.pipeline", "parse_target": "config", "resume_search": "jobs.search.loop",
    "load": "runs.rebuild", "save_pruned": "runs.storage",
    "run_search": "jobs.search.loop", "Controller": "jobs.search.policy", "PolicyConfig": "jobs.search.policy",
    "measure_onnx": "deploy.bench",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
