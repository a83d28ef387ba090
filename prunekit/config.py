"""What a prune job is asked to do: one typed configuration per job, its targets and budgets.

- :class:`OneShotConfig` (:mod:`prunekit.oneshot`) and :class:`SearchConfig` (the adaptive and fixed-rate
  schedules, :mod:`prunekit.search`) share :class:`JobConfig`'s fields and nest a :class:`TrainingConfig`
  (device, precision, data path, batches, fine-tuning learning rate). The dispatcher
  (:func:`prunekit.pipeline.prune`) picks the job by the config's type.
- Every config checks its own fields in ``__post_init__`` (types, ranges, finite numbers, names of criteria,
  runtimes, devices) and touches no file; :func:`check_paths` checks the places a job reads and writes, and
  each job calls it before any work.
- :func:`PruneConfig` builds the right type from flat keyword arguments (one per CLI option: what the CLI,
  the README's API example and saved run folders use); the CLI's option defaults are these fields'
  (:func:`option_default`), so each default lives in one place.

Plain data (JSON-safe: :func:`config_dict`, saved in every run folder), and no torch import at module level.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import ClassVar

from .errors import PrunekitError
from .files import check_output_folder, require_finite
from .runtime import check_runtime, parse_round_to

TARGET_KINDS = {"params": "params", "flops": "macs", "macs": "macs", "acc": "accuracy", "latency": "latency",
                "speedup": "speedup"}
COSTS = ("auto", "params", "flops", "latency")
DISTILL = ("auto", "on", "off")
ALLOCATIONS = ("threshold", "knapsack")  # how a one-shot plan picks each group's width (see prunekit.allocate)
KNAPSACK_VALUES = ("layers", "score")  # a channel's value in the knapsack: score × layers it touches, or score


def cost_basis(cost: str, target: Target, minimize: str = "params") -> str:
    """What Algorithm 3 scales each group's threshold by: ``params``, ``macs`` or ``latency`` (``auto``: the
    target's own measure; for accuracy targets, what is minimised)."""
    if cost != "auto":
        return {"flops": "macs"}.get(cost, cost)
    if target.kind == "accuracy":
        return "macs" if minimize == "flops" else "params"
    return "latency" if target.kind == "speedup" else target.kind


@dataclass
class Target:
    kind: str  # "params" | "macs" (FLOPs = 2 × MACs: same fraction) | "accuracy" | "latency" | "speedup"
    amount: float  # params/macs: fraction to remove; accuracy: max loss in points; latency: ms; speedup: ×
    text: str


def parse_target(text: str) -> Target:
    """``params=0.5`` / ``flops=0.5`` (fraction to remove), ``acc=1.0`` (max top-1 loss in points on the
    validation split), ``latency=2.5`` (ms at batch 1 in onnxruntime on this machine's CPU), ``speedup=1.5``
    (1.5 × faster than the dense model on ``--runtime`` at the speed-check batch, measured)."""
    m = re.fullmatch(r"\s*([a-z]+)\s*=\s*([-+0-9.eE]+)\s*(%|ms|x|×)?\s*", text or "")
    if not m:
        raise PrunekitError("target must look like params=0.5, flops=0.5, acc=1.0, latency=2.5 or speedup=1.5, "
                            f"got {text!r}")
    kind, value, unit = m.group(1), m.group(2), m.group(3)
    try:
        amount = float(value) / (100 if unit == "%" and kind != "acc" else 1)
    except ValueError:
        raise PrunekitError(f"target value {value!r} is not a number") from None
    if kind not in TARGET_KINDS:
        raise PrunekitError(f"unknown target kind {kind!r}: use params=, flops=, acc=, latency= or speedup=")
    kind = TARGET_KINDS[kind]
    if kind in ("params", "macs") and not 0 < amount < 1:
        raise PrunekitError(f"target {text!r}: the reduction must be a fraction strictly between 0 and 1")
    if kind == "accuracy" and not 0 <= amount < 100:
        raise PrunekitError(f"target {text!r}: the accuracy loss must be between 0 and 100 points")
    if kind == "latency" and not amount > 0:
        raise PrunekitError(f"target {text!r}: the latency must be positive (milliseconds)")
    if kind == "speedup" and not (math.isfinite(amount) and amount > 1):
        raise PrunekitError(f"target {text!r}: the speedup must be a number greater than 1 (times faster than dense)")
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


def _int_at_least(name: str, value, least: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise PrunekitError(f"--{name.replace('_', '-')} must be an integer ≥ {least}, got {value!r}")


def _finite(obj, *names: str) -> None:
    for name in names:
        require_finite(f"--{name.replace('_', '-')}", getattr(obj, name))


@dataclass
class TrainingConfig:
    """Where and how a job computes: scores, retraining and evaluation (nested in every job config)."""
    batch_size: int = 128
    lr: float = 0.01  # fine-tuning learning rate (cosine): one-shot's fine-tune, a search's final fine-tune
    train_fraction: float = 1.0  # share of the training split one epoch visits (rounds and fine-tunes)
    device: str = "auto"  # where scores, training and evaluation run: auto | cpu | cuda | cuda:N
    amp: str = "auto"  # mixed precision on CUDA: auto (bf16) | bf16 | fp16 | off
    data_mode: str = "auto"  # auto | memory | stream (ImageFolder read batch by batch)
    workers: int | None = None  # DataLoader workers for streamed data (None: min(4, cores - 1))
    distill: str = "auto"  # distil every retraining from the dense model: auto (when there are labels) | on | off
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9  # weight of the soft (teacher) term; 1 − α goes to cross-entropy on the labels
    bn_images: int = 1024  # training images BatchNorm statistics are re-estimated on after every surgery (0: off)

    def __post_init__(self) -> None:
        from .data import MODES  # torch-side names, imported when a config is built (the CLI's import stays light)
        from .device import AMP, check_device_spec

        _int_at_least("batch_size", self.batch_size, 1)
        _finite(self, "lr", "train_fraction")
        if self.lr < 0:
            raise PrunekitError(f"--lr must not be negative, got {self.lr}")
        if not 0 < self.train_fraction <= 1:
            raise PrunekitError(f"--train-fraction must be in (0, 1], got {self.train_fraction}")
        check_device_spec(self.device)
        if self.amp not in AMP:
            raise PrunekitError(f"--amp must be one of {', '.join(AMP)}, got {self.amp!r}")
        if self.data_mode not in MODES:
            raise PrunekitError(f"--data-mode must be one of {', '.join(MODES)}, got {self.data_mode!r}")
        _int_at_least("workers", self.workers, 0, optional=True)
        _int_at_least("bn_images", self.bn_images, 0)
        _finite(self, "distill_temperature", "distill_alpha")
        if self.distill not in DISTILL:
            raise PrunekitError(f"--distill must be one of {', '.join(DISTILL)}, got {self.distill!r}")
        if self.distill_temperature <= 0:
            raise PrunekitError(f"--distill-temperature must be positive, got {self.distill_temperature}")
        if not 0 <= self.distill_alpha <= 1:
            raise PrunekitError(f"--distill-alpha must be in [0, 1], got {self.distill_alpha}")


@dataclass
class JobConfig:
    """What both jobs share: the model, data, target, scoring, alignment, checks and outputs."""
    model: str
    data: str
    target: str
    out: str
    weights: str | None = None
    criterion: str = "attention-mean"
    p: float = 1.0
    calib_images: int = 512
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
    allocate: str = "knapsack"  # widths: "knapsack" (least score lost for the cost) or "threshold" (Algorithm 3)
    knapsack_value: str = "layers"  # knapsack: a channel's value is its score × the layers its group touches
    threshold_scale: str = "total"  # Algorithm 3's C_g: "total" (the paper) or "per-layer" (C_g / layers touched)
    group_cap: float = 1.0  # largest share of one group's channels a single plan (round) removes
    eval_images: int | None = None  # test images for accuracy (None: the whole test split)
    atol: float = 1e-4
    overwrite: bool = False
    latency_threads: int = 1
    latency_runs: int = 50
    export: bool = True
    log_format: str = "text"
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        from .scoring import get_criterion

        if isinstance(self.training, dict):  # the nested form of a saved config
            self.training = TrainingConfig(**self.training)
        if not isinstance(self.training, TrainingConfig):
            raise PrunekitError(f"training must be a TrainingConfig, got {type(self.training).__name__}")
        parse_target(self.target)
        _finite(self, "p", "atol", "group_cap")
        for name, least in (("calib_images", 1), ("verify_images", 1), ("check_images", 1), ("latency_threads", 1),
                            ("latency_runs", 1), ("seed", 0)):
            _int_at_least(name, getattr(self, name), least)
        for name in ("num_classes", "eval_images"):
            _int_at_least(name, getattr(self, name), 1, optional=True)
        if self.input_size is not None:
            self.input_size = tuple(self.input_size)
        if self.p <= 0:
            raise PrunekitError(f"--p must be positive, got {self.p}")
        if self.atol < 0:
            raise PrunekitError(f"--atol must be a finite number ≥ 0, got {self.atol}")
        if self.threshold_scale not in ("total", "per-layer"):
            raise PrunekitError(f"--threshold-scale must be total or per-layer, got {self.threshold_scale!r}")
        if not 0 < self.group_cap <= 1:
            raise PrunekitError(f"--group-cap must be in (0, 1], got {self.group_cap}")
        if self.knapsack_value not in KNAPSACK_VALUES:
            raise PrunekitError(f"--knapsack-value must be one of {', '.join(KNAPSACK_VALUES)}, got "
                                f"{self.knapsack_value!r}")
        if self.allocate not in ALLOCATIONS:
            raise PrunekitError(f"--allocate must be one of {', '.join(ALLOCATIONS)}, got {self.allocate!r}")
        if self.cost not in COSTS:
            raise PrunekitError(f"--cost must be one of {', '.join(COSTS)}, got {self.cost!r}")
        get_criterion(self.criterion)
        check_runtime(self.runtime)
        self.round_to = parse_round_to(self.round_to)
        self.speed_batches = tuple(self.speed_batches or ())
        if not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in self.speed_batches):
            raise PrunekitError(f"--speed-batches must be positive integers, got {self.speed_batches!r}")
        if self.log_format not in ("text", "json"):
            raise PrunekitError(f"--log-format must be text or json, got {self.log_format!r}")

    @property
    def parsed_target(self) -> Target:
        return parse_target(self.target)

    @property
    def speed_batch(self) -> int:
        """The batch a ``speedup=`` target is measured at: the largest of ``--speed-batches`` (1 without any)."""
        return max(self.speed_batches) if self.speed_batches else 1


@dataclass
class OneShotConfig(JobConfig):
    """One-shot: bisect the global threshold for the target, prune once, verify, optionally fine-tune."""
    finetune_epochs: float = 0.0

    schedule: ClassVar[str] = "oneshot"

    def __post_init__(self) -> None:
        super().__post_init__()
        if require_finite("--finetune-epochs", self.finetune_epochs) < 0:
            raise PrunekitError(f"--finetune-epochs must be ≥ 0, got {self.finetune_epochs}")
        if self.parsed_target.kind == "accuracy":
            raise PrunekitError(f"target {self.target} needs a search: use --schedule adaptive (or fixed)")


@dataclass
class SearchConfig(JobConfig):
    """The iterative search: adaptive (moves T) or fixed-rate (removes ``rate`` per round) schedule."""
    schedule: str = "adaptive"  # "adaptive" | "fixed"
    epochs_per_round: float = 1.0
    max_rounds: int = 30
    time_limit: str | None = None
    lam: float = 0.005
    slack: float = 0.02
    rate: float = 0.05
    step_mode: str = "size"  # adaptive: "size" (each round removes a share of what is left) or "threshold" (T += λ)
    max_step: float = 0.25  # size mode: largest share of the remaining params / MACs one round removes
    budget_epochs: float | None = None  # total retraining of a search: rounds + the final fine-tune
    final_epochs: float | None = None  # fine-tune of the delivered model (default: half of --budget-epochs, else 0)
    rewind: str = "auto"  # "lr" | "weights" | "auto" (weights when --rewind-checkpoint is given)
    rewind_checkpoint: str | None = None
    rewind_point: float = 0.6
    train_lr: float = 0.1  # peak learning rate of each round's retraining schedule
    lr_schedule: str = "step"
    weight_decay: float = 2e-4
    minimize: str = "params"  # for acc targets: "params" or "flops"
    val_images: int | None = None  # validation images every round is measured on (None: the whole split)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.schedule not in ("adaptive", "fixed"):
            raise PrunekitError(f"unknown schedule {self.schedule!r}: oneshot, adaptive or fixed")
        _finite(self, "epochs_per_round", "lam", "slack", "rate", "max_step", "rewind_point", "train_lr",
                "weight_decay")
        _int_at_least("max_rounds", self.max_rounds, 1)
        _int_at_least("val_images", self.val_images, 1, optional=True)
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
        if self.lr_schedule not in ("step", "cosine"):
            raise PrunekitError(f"lr_schedule must be step or cosine, got {self.lr_schedule!r}")
        if self.train_lr < 0 or self.weight_decay < 0 or self.slack < 0:
            raise PrunekitError("--train-lr, weight decay and slack must not be negative")
        parse_duration(self.time_limit)


JOBS = {"oneshot": OneShotConfig, "adaptive": SearchConfig, "fixed": SearchConfig}


def _init_fields(cls) -> dict:
    return {f.name: f for f in fields(cls) if f.init}


def option_default(name: str):
    """The default of a flat prune option (one place for each: the config field's)."""
    for cls in (SearchConfig, OneShotConfig, TrainingConfig):
        f = _init_fields(cls).get(name)
        if f is not None and f.default is not MISSING:
            return f.default
    raise KeyError(name)


def PruneConfig(schedule: str = "adaptive", **options) -> OneShotConfig | SearchConfig:  # noqa: N802 (a factory)
    """The job config for ``schedule`` from flat keyword arguments, one per CLI option (``lr=``,
    ``batch_size=``… go into the nested :class:`TrainingConfig`; a nested ``training=`` is accepted too).

    An option of the other job left at its default is ignored (the CLI passes every option); set to
    something else, it is an error, so ``--lam`` is never silently dropped on a one-shot run."""
    if schedule not in JOBS:
        raise PrunekitError(f"unknown schedule {schedule!r}: oneshot, adaptive or fixed")
    cls = JOBS[schedule]
    training = options.pop("training", None) or {}
    training = asdict(training) if isinstance(training, TrainingConfig) else dict(training)
    own, train_names = _init_fields(cls), _init_fields(TrainingConfig)
    other = _init_fields(SearchConfig if cls is OneShotConfig else OneShotConfig)
    job = {"schedule": schedule} if cls is SearchConfig else {}
    for name, value in options.items():
        if name in train_names:
            training[name] = value
        elif name in own:
            job[name] = value
        elif name in other:
            if value != other[name].default:
                which = "a search (--schedule adaptive or fixed)" if cls is OneShotConfig else "--schedule oneshot"
                raise PrunekitError(f"--{name.replace('_', '-')} applies to {which}, not --schedule {schedule}")
        else:
            raise PrunekitError(f"unknown prune option {name!r}")
    return cls(**job, training=TrainingConfig(**training))


def config_dict(cfg: JobConfig) -> dict:
    """The JSON form saved in run folders (``schedule`` included; :func:`PruneConfig` reads it back)."""
    d = {"schedule": cfg.schedule, **asdict(cfg)}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def check_paths(cfg: JobConfig) -> None:
    """The files a job reads exist and its output folder can be written; called before any work."""
    rewind = getattr(cfg, "rewind_checkpoint", None)
    if rewind and not os.path.isfile(rewind):
        raise PrunekitError(f"rewind checkpoint not found: {rewind}")
    if cfg.weights and not os.path.isfile(cfg.weights):
        raise PrunekitError(f"weights file not found: {cfg.weights}")
    check_output_folder(cfg.out, cfg.overwrite)
