"""What a prune job is asked to do: the configuration, its targets and budgets, and their validation.

Plain data (JSON-safe, saved in every run folder), no model or data touched here, and no torch import at
module level: the CLI takes its option defaults from these fields. :meth:`PruneConfig.validate`
checks every field and, when asked, the places the run will read and write; both jobs (one-shot,
:mod:`prunekit.oneshot`, and the search, :mod:`prunekit.search`) call it before any work.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .errors import PrunekitError
from .files import check_output_folder, require_finite
from .runtime import check_runtime, parse_round_to

TARGET_KINDS = {"params": "params", "flops": "macs", "macs": "macs", "acc": "accuracy", "latency": "latency"}
COSTS = ("auto", "params", "flops", "latency")


def cost_basis(cost: str, target: Target, minimize: str = "params") -> str:
    """What Algorithm 3 scales each group's threshold by: ``params``, ``macs`` or ``latency`` (``auto``: the
    target's own measure; for accuracy targets, what is minimised)."""
    if cost != "auto":
        return {"flops": "macs"}.get(cost, cost)
    if target.kind == "accuracy":
        return "macs" if minimize == "flops" else "params"
    return target.kind


@dataclass
class Target:
    kind: str  # "params" | "macs" (FLOPs = 2 × MACs: same fraction) | "accuracy" | "latency"
    amount: float  # params/macs: fraction to remove; accuracy: max loss in points; latency: milliseconds
    text: str


def parse_target(text: str) -> Target:
    """``params=0.5`` / ``flops=0.5`` (fraction to remove), ``acc=1.0`` (max top-1 loss in points on the
    validation split), ``latency=2.5`` (ms at batch 1 in onnxruntime on this machine's CPU)."""
    m = re.fullmatch(r"\s*([a-z]+)\s*=\s*([-+0-9.eE]+)\s*(%|ms)?\s*", text or "")
    if not m:
        raise PrunekitError(f"target must look like params=0.5, flops=0.5, acc=1.0 or latency=2.5, got {text!r}")
    kind, value, unit = m.group(1), m.group(2), m.group(3)
    try:
        amount = float(value) / (100 if unit == "%" and kind != "acc" else 1)
    except ValueError:
        raise PrunekitError(f"target value {value!r} is not a number") from None
    if kind not in TARGET_KINDS:
        raise PrunekitError(f"unknown target kind {kind!r}: use params=, flops=, acc= or latency=")
    kind = TARGET_KINDS[kind]
    if kind in ("params", "macs") and not 0 < amount < 1:
        raise PrunekitError(f"target {text!r}: the reduction must be a fraction strictly between 0 and 1")
    if kind == "accuracy" and not 0 <= amount < 100:
        raise PrunekitError(f"target {text!r}: the accuracy loss must be between 0 and 100 points")
    if kind == "latency" and not amount > 0:
        raise PrunekitError(f"target {text!r}: the latency must be positive (milliseconds)")
    return Target(kind, amount, text.strip())


def parse_duration(text: str | None) -> float | None:
    """``2h``, ``30m``, ``90s``, ``1h30m``, or plain seconds → seconds."""
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not m or not any(m.groups()):
        raise PrunekitError(f"time limit must look like 2h, 30m, 90s or 1h30m, got {text!r}")
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    total = h * 3600 + mi * 60 + se
    if total <= 0:
        raise PrunekitError(f"time limit must be positive, got {text!r}")
    return total


@dataclass
class PruneConfig:
    model: str
    data: str
    target: str
    out: str
    schedule: str = "adaptive"
    weights: str | None = None
    criterion: str = "attention-mean"
    p: float = 1.0
    calib_images: int = 512
    finetune_epochs: float = 0.0
    lr: float = 0.01
    batch_size: int = 128
    input_size: tuple[int, int, int] | None = None
    num_classes: int | None = None
    trust_pickle: bool = False
    seed: int = 0
    verify_images: int = 64
    check_images: int = 16  # real inputs stored in the run folder for export's ONNX check
    round_to: int | str = "auto"  # every pruned group keeps a multiple of this (auto: the runtime's)
    runtime: str = "onnxruntime-cpu"  # where the model ships: decides round_to=auto and the final timing
    speed_batches: tuple[int, ...] = (1, 32)  # dense vs pruned timed at these batch sizes at the end (() = skip)
    cost: str = "auto"  # what Algorithm 3 scales thresholds by: params | flops | latency | auto (the target's)
    device: str = "auto"  # where scores, training and evaluation run: auto | cpu | cuda | cuda:N
    amp: str = "auto"  # mixed precision on CUDA: auto (bf16) | bf16 | fp16 | off
    data_mode: str = "auto"  # auto | memory | stream (ImageFolder read batch by batch)
    workers: int | None = None  # DataLoader workers for streamed data (None: min(4, cores - 1))
    eval_images: int | None = None  # test images for accuracy (None: the whole test split)
    atol: float = 1e-4
    overwrite: bool = False
    # search (schedule adaptive / fixed)
    epochs_per_round: float = 1.0
    train_fraction: float = 1.0
    max_rounds: int = 30
    time_limit: str | None = None
    lam: float = 0.005
    slack: float = 0.02
    rate: float = 0.05
    step_mode: str = "size"  # adaptive: "size" (each round removes a share of what is left) or "threshold" (T += λ)
    max_step: float = 0.1  # size mode: largest share of the remaining params / MACs one round removes
    threshold_scale: str = "total"  # Algorithm 3's C_g: "total" (the paper) or "per-layer" (C_g / layers touched)
    group_cap: float = 1.0  # largest share of one group's channels a single plan (round) removes
    budget_epochs: float | None = None  # total retraining of a search: rounds + the final fine-tune
    final_epochs: float | None = None  # fine-tune of the delivered model (default: half of --budget-epochs, else 0)
    rewind: str = "auto"  # "lr" | "weights" | "auto" (weights when --rewind-checkpoint is given)
    rewind_checkpoint: str | None = None
    rewind_point: float = 0.6
    train_lr: float = 0.1
    lr_schedule: str = "step"
    weight_decay: float = 2e-4
    minimize: str = "params"  # for acc targets: "params" or "flops"
    latency_threads: int = 1
    latency_runs: int = 50
    export: bool = True
    log_format: str = "text"
    extra: dict = field(default_factory=dict)

    def validate(self, check_out: bool = True) -> Target:
        """Check every field (types, ranges, finite numbers) and, with ``check_out``, the places the run will
        read and write; raises PrunekitError before any work starts. Returns the parsed target."""
        target = parse_target(self.target)
        if self.schedule not in ("oneshot", "adaptive", "fixed"):
            raise PrunekitError(f"unknown schedule {self.schedule!r}: oneshot, adaptive or fixed")
        if self.schedule == "oneshot" and target.kind == "accuracy":
            raise PrunekitError(f"target {target.text} needs a search: use --schedule adaptive (or fixed)")
        from .data import MODES  # torch-side modules, imported when a job validates (the CLI's import stays light)
        from .device import AMP, check_device_spec
        from .scoring import get_criterion

        check_device_spec(self.device)
        if self.amp not in AMP:
            raise PrunekitError(f"--amp must be one of {', '.join(AMP)}, got {self.amp!r}")
        if self.data_mode not in MODES:
            raise PrunekitError(f"--data-mode must be one of {', '.join(MODES)}, got {self.data_mode!r}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise PrunekitError(f"--workers must be an integer ≥ 0, got {self.workers!r}")
        if self.threshold_scale not in ("total", "per-layer"):
            raise PrunekitError(f"--threshold-scale must be total or per-layer, got {self.threshold_scale!r}")
        if not 0 < require_finite("--group-cap", self.group_cap) <= 1:
            raise PrunekitError(f"--group-cap must be in (0, 1], got {self.group_cap}")
        if self.cost not in COSTS:
            raise PrunekitError(f"--cost must be one of {', '.join(COSTS)}, got {self.cost!r}")
        for name in ("p", "lr", "train_lr", "epochs_per_round", "train_fraction", "lam", "rate", "slack",
                     "finetune_epochs", "atol", "rewind_point", "weight_decay"):
            require_finite(f"--{name.replace('_', '-')}", getattr(self, name))
        for name, least in (("batch_size", 1), ("calib_images", 1), ("verify_images", 1), ("max_rounds", 1),
                            ("latency_threads", 1), ("latency_runs", 1), ("num_classes", 1), ("eval_images", 1),
                            ("check_images", 1)):
            value = getattr(self, name)
            if value is None and name in ("num_classes", "eval_images"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise PrunekitError(f"--{name.replace('_', '-')} must be an integer ≥ {least}, got {value!r}")
        if self.schedule != "oneshot":
            if not 0 < self.train_fraction <= 1:
                raise PrunekitError(f"--train-fraction must be in (0, 1], got {self.train_fraction}")
            if self.epochs_per_round <= 0:
                raise PrunekitError(f"--epochs-per-round must be positive, got {self.epochs_per_round}")
            if not 0 < self.rate < 1:
                raise PrunekitError(f"--rate must be a fraction in (0, 1), got {self.rate}")
            if self.lam <= 0:
                raise PrunekitError(f"--lam must be positive, got {self.lam}")
            if self.step_mode not in ("size", "threshold"):
                raise PrunekitError(f"--step-mode must be size or threshold, got {self.step_mode!r}")
            if not 0 < self.max_step < 1:
                raise PrunekitError(f"--max-step must be a fraction in (0, 1), got {self.max_step}")
            for name in ("budget_epochs", "final_epochs"):
                v = getattr(self, name)
                if v is not None and (require_finite(f"--{name.replace('_', '-')}", v) < 0):
                    raise PrunekitError(f"--{name.replace('_', '-')} must not be negative, got {v}")
            if self.budget_epochs is not None and (self.final_epochs or 0) >= self.budget_epochs:
                raise PrunekitError("--final-epochs must leave part of --budget-epochs for the rounds")
            if self.rewind not in ("auto", "lr", "weights"):
                raise PrunekitError(f"--rewind must be lr, weights or auto, got {self.rewind!r}")
            if self.rewind == "weights" and not self.rewind_checkpoint:
                raise PrunekitError("weight rewinding needs --rewind-checkpoint (weights saved early in training)")
            if self.minimize not in ("params", "flops"):
                raise PrunekitError(f"--minimize must be params or flops, got {self.minimize!r}")
            if not 0 <= self.rewind_point < 1:
                raise PrunekitError(f"rewind_point must be in [0, 1), got {self.rewind_point}")
            parse_duration(self.time_limit)
        get_criterion(self.criterion)
        check_runtime(self.runtime)
        self.round_to = parse_round_to(self.round_to)
        self.speed_batches = tuple(self.speed_batches or ())
        if not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in self.speed_batches):
            raise PrunekitError(f"--speed-batches must be positive integers, got {self.speed_batches!r}")
        if self.p <= 0:
            raise PrunekitError(f"--p must be positive, got {self.p}")
        if self.finetune_epochs < 0:
            raise PrunekitError(f"--finetune-epochs must be ≥ 0, got {self.finetune_epochs}")
        for name in ("lr", "train_lr"):
            if getattr(self, name) < 0:
                raise PrunekitError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.atol < 0 or self.weight_decay < 0 or self.slack < 0:
            raise PrunekitError("atol, weight decay and slack must not be negative")
        if self.log_format not in ("text", "json"):
            raise PrunekitError(f"--log-format must be text or json, got {self.log_format!r}")
        if check_out:
            if self.rewind_checkpoint and not os.path.isfile(self.rewind_checkpoint):
                raise PrunekitError(f"rewind checkpoint not found: {self.rewind_checkpoint}")
            if self.weights and not os.path.isfile(self.weights):
                raise PrunekitError(f"weights file not found: {self.weights}")
            check_output_folder(self.out, self.overwrite)
        return target
