"""What a prune job is asked to do: one typed configuration per job, its targets and budgets.

- :class:`OneShotConfig` (:mod:`prunekit.jobs.oneshot`) and :class:`SearchConfig` (the adaptive and fixed-rate
  schedules, :mod:`prunekit.jobs.search.loop`) share :class:`JobConfig`'s fields and nest a :class:`TrainingConfig`
  (device, precision, data path, batches, fine-tuning learning rate). The dispatcher
  (:func:`prunekit.jobs.pipeline.prune`) picks the job by the config's type.
- Every config checks its own fields in ``__post_init__`` (types, ranges, finite numbers, names of criteria,
  runtimes, devices) and touches no file; :func:`check_paths` checks the places a job reads and writes, and
  each job calls it before any work.
- :func:`PruneConfig` builds the right type from flat keyword arguments (one per CLI option: what the CLI,
  the README's API example and saved run folders use); the CLI's option defaults are these fields'
  (:func:`option_default`), so each default lives in one place.

Plain data (JSON-safe: :func:`config_dict`, saved in every run folder), and no torch import at module level.
"""
from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import ClassVar

from prunekit.config.choices import check_choice, check_device_spec, parse_round_to
from prunekit.config.targets import TargetKind, Target, parse_duration, parse_target
from prunekit.errors import PrunekitError
from prunekit.files import check_output_folder, require_finite


def _int_at_least(name: str, value, least: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise PrunekitError(f"--{name.replace('_', '-')} must be an integer ≥ {least}, got {value!r}")


def _check_choices(obj, *names: str) -> None:
    for name in names:
        check_choice(name, getattr(obj, name))


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
    amp: str = "auto"  # training: auto (bf16 on CUDA and on CPUs with native bf16, else fp32) | bf16 | fp16 | off
    data_mode: str = "auto"  # auto | memory | stream (ImageFolder read batch by batch)
    labels: str = "use"  # use | ignore (train on the dense model's outputs alone; test accuracy still reported)
    distill_loss: str = "auto"  # per output: auto, or kl | mse | smooth-l1 for all, or out=kl,boxes=mse
    workers: int | None = None  # DataLoader workers for streamed data (None: min(4, cores - 1))
    distill: str = "auto"  # distil every retraining from the dense model: auto (when there are labels) | on | off
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9  # weight of the soft (teacher) term; 1 − α goes to cross-entropy on the labels
    bn_images: int = 1024  # training images BatchNorm statistics are re-estimated on after every surgery (0: off)
    sync_bn: bool = False  # under torchrun on CUDA: BatchNorm statistics over all ranks' images (SyncBatchNorm)

    def __post_init__(self) -> None:
        _int_at_least("batch_size", self.batch_size, 1)
        _finite(self, "lr", "train_fraction")
        if self.lr < 0:
            raise PrunekitError(f"--lr must not be negative, got {self.lr}")
        if not 0 < self.train_fraction <= 1:
            raise PrunekitError(f"--train-fraction must be in (0, 1], got {self.train_fraction}")
        check_device_spec(self.device)
        _check_choices(self, "amp", "data_mode", "distill", "labels")
        from prunekit.config.choices import parse_distill_loss

        parse_distill_loss(self.distill_loss)
        _int_at_least("workers", self.workers, 0, optional=True)
        _int_at_least("bn_images", self.bn_images, 0)
        _finite(self, "distill_temperature", "distill_alpha")
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
    latency_table: str | None = None  # a table measured on the target device (prunekit latency-table): plan from it
    export: bool = True
    log_format: str = "text"
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
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
        if not 0 < self.group_cap <= 1:
            raise PrunekitError(f"--group-cap must be in (0, 1], got {self.group_cap}")
        _check_choices(self, "threshold_scale", "knapsack_value", "allocate", "cost", "criterion", "runtime",
                       "log_format")
        self.round_to = parse_round_to(self.round_to)
        self.speed_batches = tuple(self.speed_batches or ())
        if not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in self.speed_batches):
            raise PrunekitError(f"--speed-batches must be positive integers, got {self.speed_batches!r}")

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
    finetune_minutes: float = 0.0  # > 0: the fine-tune's wall-clock budget (the epochs, when > 0, cap it)
    depth: str = "auto"  # drop whole residual branches: on | off | auto (knapsack with a latency / speedup target)
    branch_criterion: str = "ablation"  # how a dropped branch is valued: ablation | share | channels

    schedule: ClassVar[str] = "oneshot"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choices(self, "depth", "branch_criterion")
        if self.depth == "on" and self.allocate != "knapsack":
            raise PrunekitError("--depth on needs --allocate knapsack (a branch is dropped as a width of 0)")
        if require_finite("--finetune-epochs", self.finetune_epochs) < 0:
            raise PrunekitError(f"--finetune-epochs must be ≥ 0, got {self.finetune_epochs}")
        if require_finite("--finetune-minutes", self.finetune_minutes) < 0:
            raise PrunekitError(f"--finetune-minutes must be ≥ 0, got {self.finetune_minutes}")
        if self.parsed_target.bounds_quality:
            raise PrunekitError(f"target {self.target} needs a search: use --schedule adaptive (or fixed)")

    @property
    def finetunes(self) -> bool:
        return self.finetune_epochs > 0 or self.finetune_minutes > 0

    @property
    def drops_branches(self) -> bool:
        """Whether the plan may drop residual branches: ``on``, or ``auto`` with the knapsack planning for a
        latency / speedup target (the runtime's table prices a layer's fixed cost, which only depth removes) on a
        runtime where dropping was not measured to cost (not onnxruntime int8)."""
        if self.depth != "auto":
            return self.depth == "on"
        from prunekit.runtimes import get_runtime

        return (self.allocate == "knapsack" and self.parsed_target.kind.timed
                and get_runtime(self.runtime).depth)


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
        if self.schedule not in JOBS or JOBS[self.schedule] is not SearchConfig:
            raise PrunekitError(f"unknown schedule {self.schedule!r}: oneshot, adaptive or fixed")
        _check_choices(self, "step_mode", "rewind", "minimize", "lr_schedule")
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
        if not 0 < self.max_step < 1:
            raise PrunekitError(f"--max-step must be a fraction in (0, 1), got {self.max_step}")
        for name in ("budget_epochs", "final_epochs"):
            v = getattr(self, name)
            if v is not None and (require_finite(f"--{name.replace('_', '-')}", v) < 0):
                raise PrunekitError(f"--{name.replace('_', '-')} must not be negative, got {v}")
        if self.budget_epochs is not None and (self.final_epochs or 0) >= self.budget_epochs:
            raise PrunekitError("--final-epochs must leave part of --budget-epochs for the rounds")
        if self.rewind == "weights" and not self.rewind_checkpoint:
            raise PrunekitError("weight rewinding needs --rewind-checkpoint (weights saved early in training)")
        if not 0 <= self.rewind_point < 1:
            raise PrunekitError(f"rewind_point must be in [0, 1), got {self.rewind_point}")
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
    """The files a job reads exist, the runtime it times is installed, and its output folder can be written;
    called before any work."""
    from prunekit.runtimes import get_runtime

    runtime = get_runtime(cfg.runtime)
    if runtime.artifact == "onnx":  # a GPU runtime may be planned for on a machine without one (its speed is skipped)
        runtime.require()
    if cfg.latency_table and not os.path.isfile(cfg.latency_table):
        raise PrunekitError(f"latency table not found: {cfg.latency_table}")
    if cfg.latency_table and cfg.parsed_target.kind == TargetKind.latency:
        raise PrunekitError("latency= is milliseconds on the machine that measures it; with --latency-table (another "
                            "device's layer times) give the goal as speedup=X")
    rewind = getattr(cfg, "rewind_checkpoint", None)
    if rewind and not os.path.isfile(rewind):
        raise PrunekitError(f"rewind checkpoint not found: {rewind}")
    if cfg.weights and not os.path.isfile(cfg.weights):
        raise PrunekitError(f"weights file not found: {cfg.weights}")
    check_output_folder(cfg.out, cfg.overwrite)
