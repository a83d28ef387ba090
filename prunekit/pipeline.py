"""The one-shot prune job: model + data → scores → plan → surgery → verification → run folder.

``prune(PruneConfig(...))`` is what ``prunekit prune`` runs. Everything it writes goes to a temporary folder
next to ``out`` that is renamed to ``out`` at the end, so a failed run leaves nothing half-written.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from .data import MODES, DataBundle, load_data
from .device import AMP, check_device_spec, resolve_compute
from .errors import Interrupted, PrunekitError
from .files import check_output_folder, make_temp_dir, require_finite
from .graph import build_graph, find_groups, frozen_summary
from .latency import LatencyTable, predict_ms
from .masks import CostModel, plan_for_target, plan_for_target_aligned
from .metrics import count_model
from .models import resolve_model
from .runtime import check_runtime, parse_round_to, resolve_round_to
from .scoring import get_criterion, score_groups
from .storage import atomic_write_json, load, save_check_inputs, save_pruned
from .surgery import apply_plan, compare_outputs, verify_masked_equals_pruned
from .train import TrainConfig, evaluate, finetune

TARGET_KINDS = {"params": "params", "flops": "macs", "macs": "macs", "acc": "accuracy", "latency": "latency"}
COSTS = ("auto", "params", "flops", "latency")


def cost_basis(cost: str, target: "Target", minimize: str = "params") -> str:
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


def check_input_size(model: torch.nn.Module, input_size: tuple[int, int, int]) -> tuple[int, ...]:
    """Run the model once on zeros of ``input_size``; returns the output shape (a clear error if it fails)."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *input_size))
    except Exception as e:
        raise PrunekitError(
            f"the model does not run on inputs of size {','.join(map(str, input_size))}: "
            f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]} (set --input-size C,H,W)") from e
    if not isinstance(out, torch.Tensor):
        raise PrunekitError(f"the model returns a {type(out).__name__}, not a tensor of class scores")
    return tuple(out.shape)


def check_data_fits(bundle: DataBundle, input_size: tuple[int, int, int], outputs: tuple[int, ...] | None = None,
                    model: str = "the model") -> None:
    """The data's images have the model's input size, and its classes match the classifier's outputs."""
    if bundle.synthetic:
        return
    h, w = bundle.train.image_size
    if (h, w) != tuple(input_size[1:]):
        raise PrunekitError(f"data {bundle.name} has {h}×{w} images but the model expects {input_size[1]}×"
                            f"{input_size[2]} (--input-size)")
    if outputs is not None and bundle.has_labels and bundle.num_classes is not None:
        n_out = outputs[-1] if len(outputs) == 2 else None
        if n_out != bundle.num_classes:
            raise PrunekitError(
                f"data {bundle.name} has {bundle.num_classes} classes but {model} outputs {n_out or outputs}: labels "
                "would not match the classifier (set --num-classes, or use data with the model's classes)")


def spread(total: int, n: int) -> np.ndarray:
    """``n`` indices evenly spread over ``range(total)`` (splits are sorted by class: the first n are one class)."""
    return np.unique(np.linspace(0, total - 1, num=min(n, total)).astype(np.int64))


def sample_images(bundle: DataBundle, n: int) -> np.ndarray:
    """``n`` test images (uint8) spread over the split (else training images): the inputs checks run on."""
    ds = bundle.test if bundle.test is not None and len(bundle.test) else bundle.train
    return ds.images_at(spread(len(ds), n))


def sample_inputs(bundle: DataBundle, n: int) -> torch.Tensor:
    """Real inputs for verification: :func:`sample_images`, normalised."""
    return bundle.to_tensor(sample_images(bundle, n))


def layer_channels(before, after) -> list[dict]:
    post = {layer.name: layer for layer in after.layers}
    rows = []
    for layer in before.layers:
        a = post.get(layer.name)
        rows.append({"layer": layer.name, "type": layer.type, "in_before": layer.in_channels,
                     "in_after": a.in_channels if a else 0, "out_before": layer.out_channels,
                     "out_after": a.out_channels if a else 0, "params_before": layer.params,
                     "params_after": a.params if a else 0, "macs_before": layer.macs, "macs_after": a.macs if a else 0})
    return rows


def prune(cfg: PruneConfig, log: Callable[[str], None] = lambda s: None) -> dict:
    """Run the prune job (one-shot, or the search for other schedules) and write ``cfg.out``; returns run.json."""
    if cfg.schedule != "oneshot":
        from .search import run_search

        return run_search(cfg, log)
    try:
        return prune_oneshot(cfg, log)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; nothing was written ({cfg.out} is as it was)") from None


def prune_oneshot(cfg: PruneConfig, log: Callable[[str], None] = lambda s: None) -> dict:
    """One-shot: bisect the global threshold for the target, prune once, verify, optionally fine-tune."""
    target = cfg.validate()
    compute = resolve_compute(cfg.device, cfg.amp)
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    model, spec = resolve_model(cfg.model, weights=cfg.weights, input_size=cfg.input_size,
                                num_classes=cfg.num_classes, trust_pickle=cfg.trust_pickle)
    outputs = check_input_size(model, spec.input_size)
    bundle = load_data(cfg.data, spec.input_size, mode=cfg.data_mode, workers=cfg.workers)
    check_data_fits(bundle, spec.input_size, outputs, cfg.model)
    if cfg.finetune_epochs > 0 and not bundle.has_labels:
        raise PrunekitError("--finetune-epochs needs labelled data (not random)")
    timings["load"] = time.perf_counter() - t

    log(f"model {cfg.model}: building the dependency graph")
    t = time.perf_counter()
    dg = build_graph(model, spec.input_size)
    groups = find_groups(model, dg, spec.classifier)
    if not any(g.prunable for g in groups):
        reasons = "; ".join(frozen_summary(groups)[:3]) or "no conv layers"
        raise PrunekitError(f"nothing to prune in {cfg.model}: {reasons}")
    timings["graph"] = time.perf_counter() - t

    log(f"scoring filters with {cfg.criterion} on {min(cfg.calib_images, len(bundle.train))} calibration images")
    t = time.perf_counter()
    calib = bundle.calibration(cfg.calib_images, seed=cfg.seed)
    scores = score_groups(model, groups, cfg.criterion, cfg.p,
                          (x for x, _ in bundle.batches(calib, cfg.batch_size)), seed=cfg.seed, compute=compute)
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    alignment = resolve_round_to(cfg.round_to, cfg.runtime)
    cost_by = cost_basis(cfg.cost, target)
    cost = CostModel.build(model, groups, spec.input_size)
    cost.threshold_scale, cost.group_cap = cfg.threshold_scale, cfg.group_cap
    if "latency" in (cost_by, target.kind):
        log(f"latency table: timing {model.__class__.__name__}'s layer shapes on {cfg.runtime}")
        cost.attach_latency(model, spec.input_size, LatencyTable(cfg.runtime, cfg.latency_threads))
    if target.kind == "latency":
        plan, threshold, pruned, history, latency = _plan_for_latency(model, spec, groups, scores, cost, target,
                                                                      alignment.round_to, cfg, log)
    else:
        plan, threshold, used = plan_for_target_aligned(scores, cost, target.kind, target.amount,
                                                        alignment.round_to, cfg.round_to == "auto", cost_by)
        if used != alignment.round_to:
            log(f"warning: {target.text} is out of reach with every group a multiple of {alignment.round_to} "
                f"channels; aligned to {used} instead (narrow layers pay for a full {alignment.round_to}-channel "
                "block on this runtime)")
            alignment = alignment.relaxed(used, target.text)
        pruned, history = apply_plan(model, groups, plan, spec.input_size)
        latency = None
    timings["plan_and_surgery"] = time.perf_counter() - t

    t = time.perf_counter()
    inputs = sample_inputs(bundle, cfg.verify_images)
    verification = [verify_masked_equals_pruned(model, pruned, groups, plan, inputs, cfg.atol)]
    dense_count, pruned_count = count_model(model, spec.input_size), count_model(pruned, spec.input_size)
    predicted = cost.predict(plan)
    if predicted != (pruned_count.params, pruned_count.macs):
        raise PrunekitError(f"internal error: predicted (params, MACs) {predicted} but the pruned model has "
                            f"({pruned_count.params}, {pruned_count.macs})")
    if latency is not None:
        reached, met = latency["measured_ms"], latency["measured_ms"] <= target.amount
    else:
        reached = 1 - (pruned_count.params / dense_count.params if target.kind == "params"
                       else pruned_count.macs / dense_count.macs)
        met = reached >= target.amount
        if not met:
            raise PrunekitError(f"internal error: target {target.text} not met ({reached:.2%})")
    timings["verify"] = time.perf_counter() - t
    log(f"pruned: params {dense_count.params:,} → {pruned_count.params:,}, MACs {dense_count.macs:,} → "
        f"{pruned_count.macs:,}; masked == pruned within {verification[0]['max_abs_diff']:.2g}")

    accuracy = {}
    if bundle.has_labels and bundle.test is not None:
        t = time.perf_counter()
        log("evaluating on the test split")
        test = bundle.test if cfg.eval_images is None else bundle.test.subset(
            spread(len(bundle.test), cfg.eval_images))
        accuracy = {"split": "test", "images": len(test), "dense": evaluate(model, bundle, test, compute=compute),
                    "pruned": evaluate(pruned, bundle, test, compute=compute)}
        timings["evaluate"] = time.perf_counter() - t
    finetune_summary = None
    if cfg.finetune_epochs > 0:
        t = time.perf_counter()
        log(f"fine-tuning {cfg.finetune_epochs:g} epoch(s)")
        finetune_summary = finetune(pruned, bundle, TrainConfig(cfg.finetune_epochs, cfg.lr, batch_size=cfg.batch_size,
                                                                seed=cfg.seed), progress=log, compute=compute)
        if accuracy:
            accuracy["pruned_finetuned"] = evaluate(pruned, bundle, test, compute=compute)
        timings["finetune"] = time.perf_counter() - t

    t = time.perf_counter()
    speed = timed_speed(model, pruned, spec.input_size, cfg, log, bundle)
    timings["speed"] = time.perf_counter() - t
    run = {
        "prunekit_run": 1,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "model": spec.to_dict(),
        "compute": compute.to_dict(),
        "data": {"spec": cfg.data, "name": bundle.name, "synthetic": bundle.synthetic, "streamed": bundle.streamed,
                 "train": len(bundle.train),
                 "val": len(bundle.val) if bundle.val is not None else 0,
                 "test": len(bundle.test) if bundle.test is not None else 0, "num_classes": bundle.num_classes},
        "target": {"kind": target.kind, "amount": target.amount, "text": target.text, "reached": reached,
                   "met": met},
        "threshold": threshold,
        "cost": cost_by,
        "latency": latency,
        "alignment": alignment.to_dict(),
        "dense": dense_count.to_dict(layers=False),
        "pruned": pruned_count.to_dict(layers=False),
        "reduction": {"params": 1 - pruned_count.params / dense_count.params,
                      "macs": 1 - pruned_count.macs / dense_count.macs},
        "layers": layer_channels(dense_count, pruned_count),
        "groups": [{"root": g.root, "channels": g.channels, "removed": len(plan.get(g.root, [])),
                    "frozen": g.reason} for g in groups],
        "accuracy": accuracy,
        "finetune": finetune_summary,
        "speed": speed,
        "verification": verification,
        "timings_s": timings,
    }
    _write_run_folder(cfg.out, run, pruned, spec, history, cfg.overwrite, sample_images(bundle, cfg.check_images),
                      bundle, cfg.atol)
    return run


def _plan_for_latency(model, spec, groups, scores, cost, target: Target, round_to: int, cfg: PruneConfig, log):
    """One-shot to ``latency=MS``: plan with the latency table's prediction, then measure the pruned model for
    real; if it misses (the table is a model of the runtime, not the runtime), ask for more and try again."""
    from .bench import model_latency_ms

    dense_ms = model_latency_ms(model, spec.input_size, cfg.runtime, cfg.latency_threads, runs=cfg.latency_runs)
    if dense_ms <= target.amount:
        raise PrunekitError(f"the dense model already runs in {dense_ms:.3f} ms on {cfg.runtime} (target "
                            f"{target.text}): nothing to prune for")
    amount = 1 - target.amount / dense_ms
    tries = []
    for _ in range(4):
        plan, T = plan_for_target(scores, cost, "latency", min(amount, 0.99), round_to=round_to,
                                  cost_by=cost_basis(cfg.cost, target))
        pruned, history = apply_plan(model, groups, plan, spec.input_size)
        measured = model_latency_ms(pruned, spec.input_size, cfg.runtime, cfg.latency_threads, runs=cfg.latency_runs)
        predicted = predict_ms(dense_ms, cost.dense_latency, cost.predict_latency(plan))
        tries.append({"T": T, "predicted_ms": predicted, "measured_ms": measured})
        log(f"latency: predicted {predicted:.3f} ms, measured {measured:.3f} ms (dense {dense_ms:.3f} ms, "
            f"target {target.amount:g} ms)")
        if measured <= target.amount or amount >= 0.99:
            break
        amount += max((measured - target.amount) / dense_ms, 0.02)  # ask for enough more to change the plan
    return plan, T, pruned, history, {"runtime": cfg.runtime, "threads": cfg.latency_threads, "batch": 1,
                                      "dense_ms": dense_ms, **tries[-1], "tries": tries}


def timed_speed(dense, pruned, input_size, cfg: PruneConfig, log: Callable[[str], None],
                bundle: DataBundle | None = None) -> dict | None:
    """Dense vs pruned on ``cfg.runtime`` at ``cfg.speed_batches`` (a few seconds); warns when pruned is slower."""
    if not cfg.speed_batches:
        return None
    from .bench import compare_speed, speed_summary

    log(f"timing dense vs pruned on {cfg.runtime} at batch {', '.join(map(str, cfg.speed_batches))}")
    calib = bundle.tensor(bundle.calibration(64, cfg.seed)).numpy() if bundle is not None else None
    speed = compare_speed(dense, pruned, input_size, cfg.runtime, cfg.speed_batches, cfg.latency_threads,
                          calibration=calib)
    if any(r["speedup"] < 1 for r in speed.get("batches", [])):
        log(f"warning: the pruned model is slower than the dense one: {speed_summary(speed)}")
    return speed


def check_reloads(run_dir: str, model: torch.nn.Module, inputs: torch.Tensor, atol: float) -> dict:
    """Proof that the run folder rebuilds the model it was written from: same outputs on ``inputs``.

    The model spec in a folder this process has just written names code the caller chose, so it is trusted."""
    reloaded = load(run_dir, trust_pickle=True, trust_code=True)
    with torch.no_grad():
        diff, allowed, ok = compare_outputs(model.eval()(inputs), reloaded(inputs), atol, 1e-5)
    if not ok:
        from .errors import VerificationError

        raise VerificationError(f"the run folder does not reload to the pruned model: outputs differ by {diff:.3g} "
                                f"(> {allowed:.3g}); nothing was written")
    return {"check": "pruned.pt reloads to the same model", "max_abs_diff": diff, "allowed": allowed,
            "inputs": int(inputs.shape[0]), "passed": ok}


def _write_run_folder(out: str, run: dict, pruned, spec, history, overwrite: bool, check_images: np.ndarray,
                      bundle: DataBundle, atol: float) -> None:
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = make_temp_dir(parent, f".{os.path.basename(os.path.abspath(out))}.tmp-")
    try:
        save_pruned(os.path.join(tmp, "pruned.pt"), pruned, spec, history)
        save_check_inputs(tmp, check_images, bundle.mean, bundle.std)
        run["verification"].append(check_reloads(tmp, pruned, bundle.to_tensor(check_images), atol))
        atomic_write_json(os.path.join(tmp, "run.json"), run)
        from .report import write_report

        write_report(tmp)
        if os.path.isdir(out):
            if os.listdir(out) and not overwrite:
                raise PrunekitError(f"{out} was filled by someone else during the run")
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
