"""The iterative search (METHOD.md §2–4): rounds of prune → rewind → retrain → evaluate → adapt T.

Each round starts from the model of the round the controller names (the previous one, or an earlier one
after a rollback), recomputes the groups and scores on that model, prunes the channels under the
layer-aware thresholds for T (physically: later rounds train a smaller, cheaper model), rewinds (learning
rate: the schedule tail from ``rewind_point``; weights: the ``--rewind-checkpoint`` weights pruned by the
same history), retrains, and measures. Scores are on a fixed scale: relative to the *dense* model's average
channel of each layer (``scoring.score_scales``), so T means the same thing in every round.

Run folder: ``rounds.jsonl`` (one line per round), ``search/state.json`` (config, dense figures, controller),
``search/round-NNNN.pt`` (every round's model, ``pruned.pt`` format), then ``pruned.pt``, ``model.onnx`` and
``run.json`` for the delivered round. Every file is written atomically; ``--resume RUN_DIR`` continues after
the last finished round with the same seeds, so it ends where an uninterrupted run would.

Fixed-rate baselines (``--schedule fixed --rate 0.05``, paper Table 4): each round removes ``rate`` of the
remaining prunable channels (lowest scores under the same layer-aware rule) until the target is met (params,
FLOPs, latency) or the accuracy loss exceeds it (acc; the last acceptable round is delivered).
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from .bench import model_latency_ms
from .data import DataBundle, load_data
from .device import comm_device, resolve_compute
from .errors import Interrupted, PrunekitError, user_input
from .export import export_onnx
from .files import read_json
from .graph import build_graph, find_groups
from .latency import LatencyTable, layer_shapes, predict_ms, table_goal
from .masks import (CostModel, bisect_threshold, first_cut, plan_for_target_aligned, plan_for_threshold,
                    threshold_for_size)
from .metrics import count_model
from .models import build_model, load_state, resolve_model
from .config import PruneConfig, Target, cost_basis, parse_duration
from .inputs import check_data_fits, check_input_size, sample_images
from .record import check_reloads, layer_channels, timed_speed
from .policy import Controller, FixedRateController, PolicyConfig, RoundResult
from .runtime import Alignment, resolve_round_to
from .scoring import score_groups, score_scales
from .files import atomic_write_bytes, atomic_write_json
from .storage import read_pruned, save_check_inputs, save_pruned
from .surgery import apply_plan, replay, verify_masked_equals_pruned
from .train import TrainConfig, distributed, evaluate, train


class Reporter:
    """Progress lines on stderr: text, JSON lines (``--log-format json``) or nothing (``--quiet``)."""

    def __init__(self, log: Callable[[str], None], fmt: str = "text"):
        self.log, self.fmt = log, fmt

    def __call__(self, event: str, message: str, **fields) -> None:
        if distributed()[0] != 0:
            return
        if self.fmt == "json":
            self.log(json.dumps({"event": event, "message": message, **fields}, default=float))
        else:
            self.log(message)


def _broadcast(value: float) -> float:
    """Rank 0's value on every rank (timings differ between processes; decisions must not)."""
    if distributed()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=comm_device())  # nccl needs device tensors
    dist.broadcast(t, 0)
    return float(t.item())


def check_replicas_agree(model) -> None:
    """Under torchrun: every rank must hold the same weights after training (else decisions could diverge)."""
    world = distributed()[1]
    if world == 1:
        return
    total = torch.tensor([sum(float(t.double().sum()) for t in model.state_dict().values())], dtype=torch.float64,
                         device=comm_device())
    gathered = [torch.zeros_like(total) for _ in range(world)]
    dist.all_gather(gathered, total)
    if max(float(g) for g in gathered) != min(float(g) for g in gathered):
        raise PrunekitError(f"data-parallel replicas diverged: weight sums {[float(g) for g in gathered]}")


class Search:
    def __init__(self, cfg: PruneConfig, target: Target, log: Callable[[str], None], trust_code: bool = True):
        self.cfg, self.target = cfg, target
        self.trust_code = trust_code  # False on resume unless --trust-code: the spec then comes from state.json
        self.report = Reporter(log, cfg.log_format)
        self.rank = distributed()[0]
        self.dir = cfg.out
        self.state_path = os.path.join(self.dir, "search", "state.json")

    # ------------------------------------------------------------------------------------------- setup
    def setup(self, resume: dict | None) -> None:
        cfg = self.cfg
        self.compute = resolve_compute(cfg.device, cfg.amp)
        if resume is None:
            self.plan_budget()  # sets epochs_per_round before the config is saved
        else:  # the saved config already holds the split
            self.final_epochs = cfg.final_epochs if cfg.final_epochs is not None else (
                cfg.budget_epochs / 2 if cfg.budget_epochs is not None else 0.0)
            self.round_budget = float("inf") if cfg.budget_epochs is None else cfg.budget_epochs - self.final_epochs
        self.dense, self.spec = resolve_model(cfg.model, weights=cfg.weights, input_size=cfg.input_size,
                                              num_classes=cfg.num_classes, trust_pickle=cfg.trust_pickle,
                                              trust_code=self.trust_code)
        outputs = check_input_size(self.dense, self.spec.input_size)
        self.bundle: DataBundle = load_data(cfg.data, self.spec.input_size, mode=cfg.data_mode, workers=cfg.workers)
        check_data_fits(self.bundle, self.spec.input_size, outputs, cfg.model)
        if not self.bundle.has_labels or self.bundle.val is None or not len(self.bundle.val):
            raise PrunekitError("the search retrains and evaluates: it needs labelled data with a validation split")
        size = self.spec.input_size
        calib = self.bundle.calibration(cfg.calib_images, seed=cfg.seed)
        self.calib_batches = [x for x, _ in self.bundle.batches(calib, cfg.batch_size)]
        self.check_images = sample_images(self.bundle, max(min(cfg.verify_images, 32), cfg.check_images))
        self.verify_inputs = self.bundle.to_tensor(self.check_images)
        self.rewind_weights = None
        if cfg.rewind_checkpoint and cfg.rewind in ("auto", "weights"):
            from .models import read_state_dict

            self.rewind_weights = read_state_dict(cfg.rewind_checkpoint)
            load_state(self.build_dense(), self.rewind_weights,
                       cfg.rewind_checkpoint)
        self.by = {"params": "params", "macs": "macs", "latency": "macs",
                   "accuracy": "macs" if cfg.minimize == "flops" else "params"}[self.target.kind]
        self.cost_by = cost_basis(cfg.cost, self.target, cfg.minimize)  # what Algorithm 3 scales thresholds by
        self.table = (LatencyTable(cfg.runtime, cfg.latency_threads)
                      if "latency" in (self.cost_by, self.target.kind) else None)
        if resume is not None:
            self.info = resume["dense"]
            self.ctrl = Controller.from_state(resume["controller"])
            self.alignment = Alignment(**self.info["alignment"]) if "alignment" in self.info else resolve_round_to(
                cfg.round_to, cfg.runtime)
            self.round_to = self.alignment.round_to
            self.epochs_spent = (len(self.ctrl.rounds) - 1) * cfg.epochs_per_round
            return
        self.epochs_spent = 0.0
        self.alignment = resolve_round_to(cfg.round_to, cfg.runtime)  # the same on resume, whatever the machine
        self.round_to = self.alignment.round_to
        groups = find_groups(self.dense, build_graph(self.dense, size), self.spec.classifier)
        if not any(g.prunable for g in groups):
            raise PrunekitError(f"nothing to prune in {cfg.model}")
        count = count_model(self.dense, size)
        self.report("setup", "measuring the dense model on the validation split")
        info = {"params": count.params, "macs": count.macs, "val_accuracy": evaluate(self.dense, self.bundle,
                                                                                  self.bundle.val, compute=self.compute),
                "scales": score_scales(self.dense, groups, cfg.criterion, cfg.p, self.calib_batches, self.compute),
                "alignment": self.alignment.to_dict()}
        info["latency_ms"] = self.latency(self.dense) if self.target.kind == "latency" else None
        if self.table is not None:
            info["latency_table_ms"] = self.table.total(layer_shapes(self.dense, size).values())
            self.table.save()
        self.info = info
        kind, amount = self.target.kind, self.target.amount
        if kind == "latency":
            amount = 1 - self.target.amount / info["latency_ms"]
        controller = FixedRateController if cfg.schedule == "fixed" else Controller
        self.ctrl = controller(PolicyConfig(kind, amount, dense_accuracy=info["val_accuracy"], lam=cfg.lam,
                                            slack=cfg.slack, max_rounds=cfg.max_rounds,
                                            time_limit_s=parse_duration(cfg.time_limit), step_mode=cfg.step_mode,
                                            max_step=cfg.max_step))

    def plan_budget(self) -> None:
        """Split ``--budget-epochs`` between the rounds and the final fine-tune (``--final-epochs``, default half).
        The rounds share theirs equally over the rounds a size-step search needs to reach a params / MACs
        target (at most ``max_rounds``), which sets ``epochs_per_round``."""
        cfg = self.cfg
        self.final_epochs = cfg.final_epochs if cfg.final_epochs is not None else (
            cfg.budget_epochs / 2 if cfg.budget_epochs is not None else 0.0)
        if cfg.budget_epochs is None:
            self.round_budget = float("inf")
            return
        self.round_budget = cfg.budget_epochs - self.final_epochs
        step = cfg.rate if cfg.schedule == "fixed" else cfg.max_step
        rounds = cfg.max_rounds
        if self.target.kind in ("params", "macs") and (cfg.schedule == "fixed" or cfg.step_mode == "size"):
            rounds = min(rounds, math.ceil(math.log(1 - self.target.amount) / math.log(1 - step) - 1e-9))
        cfg.epochs_per_round = self.round_budget / max(1, rounds)

    def build_dense(self):
        """A fresh dense model of the run's architecture (random init; weights are loaded by the caller)."""
        return build_model(self.spec, trust_pickle=self.cfg.trust_pickle, trust_code=self.trust_code).eval()

    def start(self) -> None:
        """Round 0: the dense model, acceptable by definition (first files of the run folder)."""
        if self.rank == 0:
            os.makedirs(os.path.join(self.dir, "search"), exist_ok=True)
        self.save_round(0, self.dense, [])
        self.finish_round(0, self.dense, 0.0, self.info["val_accuracy"], 0.0, 0)

    # ------------------------------------------------------------------------------------------- measures
    def latency(self, model) -> float:
        """Measured p50 latency (ms) at batch 1 on the run's runtime (rank 0 measures, every rank agrees)."""
        ms = 0.0
        if self.rank == 0:
            ms = model_latency_ms(model, self.spec.input_size, self.cfg.runtime, self.cfg.latency_threads,
                                  runs=self.cfg.latency_runs)
        return _broadcast(ms)

    def predicted_latency(self, model) -> float:
        """Latency (ms) of ``model`` predicted from the latency table: no export, no timing."""
        table_ms = self.table.total(layer_shapes(model, self.spec.input_size).values())
        self.table.save()
        return predict_ms(self.info["latency_ms"], self.info["latency_table_ms"], table_ms)

    def measure(self, model) -> tuple[float, float, float | None, float | None]:
        c = count_model(model, self.spec.input_size)
        size = c.params if self.by == "params" else c.macs
        lat = self.predicted_latency(model) if self.target.kind == "latency" else None
        if self.target.kind == "latency":
            red = 1 - lat / self.info["latency_ms"]
        elif self.target.kind == "accuracy":
            red = 1 - size / (self.info["params"] if self.by == "params" else self.info["macs"])
        else:
            red = 1 - (c.params / self.info["params"] if self.target.kind == "params" else c.macs / self.info["macs"])
        return size, red, lat, c

    # ------------------------------------------------------------------------------------------- storage
    def round_path(self, r: int) -> str:
        return os.path.join(self.dir, "search", f"round-{r:04d}.pt")

    def save_round(self, r: int, model, history: list) -> None:
        if self.rank == 0:
            save_pruned(self.round_path(r), model, self.spec, history)

    def load_round(self, r: int):
        payload = read_pruned(self.round_path(r))
        model = self.build_dense()
        replay(model, payload["history"], self.spec.input_size)
        load_state(model, payload["state_dict"], self.round_path(r))
        return model, [list(h) for h in payload["history"]]

    def finish_round(self, r: int, model, T: float, acc: float | None, seconds: float, removed: int,
                     extra: dict | None = None):
        """Measure round r, let the controller decide, append rounds.jsonl and save the search state."""
        if r == 0:
            c = count_model(model, self.spec.input_size)
            size, red, lat = (c.params if self.by == "params" else c.macs), 0.0, self.info.get("latency_ms")
        else:
            size, red, lat, c = self.measure(model)
        decision = self.ctrl.observe(RoundResult(r, T, float(size), red, acc, seconds))
        last = self.ctrl.rounds[-1]
        row = {"round": r, "T": T, "lambda": last["lam"], "params": c.params, "macs": c.macs,
               "reduction": red, "val_accuracy": acc, "latency_ms": lat,
               "latency_predicted": lat is not None and r > 0, "removed_channels": removed,
               "channels": {layer.name: layer.out_channels for layer in c.layers},
               "accepted": last["accepted"], "decision": decision.action, "reason": decision.reason,
               "wall_s": seconds, **(extra or {})}
        if self.rank == 0:
            path = os.path.join(self.dir, "rounds.jsonl")
            old = open(path, "rb").read() if os.path.exists(path) else b""
            atomic_write_bytes(path, old + (json.dumps(row, default=float) + "\n").encode())
            self.save_state()
        return decision, row

    def save_state(self) -> None:
        if self.rank == 0:
            atomic_write_json(self.state_path, {"config": asdict(self.cfg), "dense": self.info,
                                                "controller": self.ctrl.state(), "spec": self.spec.to_dict()})

    # ------------------------------------------------------------------------------------------- rounds
    def train_cfg(self, r: int, epochs: float | None = None) -> TrainConfig:
        cfg = self.cfg
        return TrainConfig(epochs=epochs or cfg.epochs_per_round, lr=cfg.train_lr, weight_decay=cfg.weight_decay,
                           batch_size=cfg.batch_size, seed=cfg.seed * 100003 + r, schedule=cfg.lr_schedule,
                           rewind_point=cfg.rewind_point, train_fraction=cfg.train_fraction)

    def fixed_threshold(self, scores, cost) -> float:
        """Smallest T whose plan removes at least ``rate`` of the remaining prunable channels."""
        total = sum(len(s) for s in scores.values())
        want = max(1, int(np.ceil(self.cfg.rate * total)))
        T = bisect_threshold(lambda t: sum(map(len, self.plan(scores, cost, t).values())) >= want, iters=40,
                             limit=1e6)
        return 1e6 if T is None else T

    def step_threshold(self, scores, cost, step: float) -> float:
        """Smallest T whose plan leaves at most (1 − step) of ``cost``'s model size (params or MACs), but not
        less than the target asks for (params / MACs targets)."""
        goal = (cost.dense_params if self.by == "params" else cost.dense_macs) * (1 - step)
        if self.target.kind in ("params", "macs"):
            goal = max(goal, (1 - self.target.amount) * self.info[self.by])
        T = threshold_for_size(scores, cost, self.by, goal, self.round_to, self.cost_by)
        return 1e12 if T is None else T

    def plan(self, scores, cost, T: float):
        return plan_for_threshold(scores, cost, T, self.cost_by, self.round_to)

    def prune_step(self, base, T: float | None, seed: int, plan_override=None, step: float | None = None):
        """Groups, scores and plan on ``base``, then physical removal (verified). Returns
        (pruned copy, new history entries, plan, T used, masked == pruned check or None).

        T comes from the caller (threshold mode), from ``step`` (size mode: the smallest T whose plan removes
        ``step`` of ``base``'s size, never past the target), or from the fixed rate; a plan that would remove
        nothing is raised to the smallest T that removes a channel, so no round retrains an unchanged model."""
        size = self.spec.input_size
        groups = find_groups(base, build_graph(base, size), self.spec.classifier)
        scores = score_groups(base, groups, self.cfg.criterion, self.cfg.p, self.calib_batches, compute=self.compute,
                              seed=seed, reference=self.info["scales"])
        cost = CostModel.build(base, groups, size)
        cost.threshold_scale, cost.group_cap = self.cfg.threshold_scale, self.cfg.group_cap
        if self.table is not None:
            cost.attach_latency(base, size, self.table)
        if plan_override is not None:
            plan = plan_override(scores, cost)
        else:
            if step is not None:
                T = self.step_threshold(scores, cost, step)
            elif T is None:
                T = self.fixed_threshold(scores, cost)
            T = first_cut(scores, cost, T, self.cost_by, self.round_to)
            plan = self.plan(scores, cost, T)
        plan = {k: v for k, v in plan.items() if v}
        if not plan:
            return copy.deepcopy(base), [], plan, T, None
        pruned, hist = apply_plan(base, groups, plan, size)
        check = verify_masked_equals_pruned(base, pruned, groups, plan, self.verify_inputs, self.cfg.atol)
        return pruned, hist, plan, T, check

    def run_round(self, r: int, base, base_history: list, T: float | None, plan_override=None,
                  step: float | None = None):
        t0 = time.perf_counter()
        size = self.spec.input_size
        pruned, hist, plan, T, check = self.prune_step(base, T, self.cfg.seed + r, plan_override, step)
        removed = sum(map(len, plan.values()))
        if removed == 0:  # nothing left that the rules may remove: retraining an unchanged model is waste
            self.ctrl.stopped = "nothing left to prune"
            self.save_state()
            return None, None, None
        history = base_history + hist
        if self.rewind_weights is not None:  # weight rewinding: early weights, pruned by the same history
            pruned = self.build_dense()
            load_state(pruned, self.rewind_weights, "rewind checkpoint")
            replay(pruned, history, size)
        t_text = (f"T={T:.4f} λ={self.ctrl.lam:.4g}" + (f" step {step:.1%}" if step is not None else "")
                  if T is not None else "fixed plan")
        self.report("round", f"round {r}: {t_text} "
                    f"removing {removed} channels; retraining {self.cfg.epochs_per_round:g} epoch(s)", round=r,
                    T=T, removed=removed)
        t_prune = time.perf_counter() - t0
        summary = train(pruned, self.bundle, self.train_cfg(r), self.report.log if self.rank == 0 else None,
                        self.compute)
        self.epochs_spent += self.cfg.epochs_per_round
        check_replicas_agree(pruned)
        t1 = time.perf_counter()
        acc = _broadcast(evaluate(pruned, self.bundle, self.bundle.val, compute=self.compute))
        self.save_round(r, pruned, history)
        seconds = _broadcast(time.perf_counter() - t0)
        overhead = {"prune_s": t_prune, "train_s": summary["seconds"],
                    "evaluate_and_save_s": time.perf_counter() - t1}
        decision, row = self.finish_round(r, pruned, T if T is not None else 0.0, acc, seconds, removed,
                                          {"train": summary, "verification": check, "timing": overhead,
                                           "epochs_spent": self.epochs_spent})
        lat = f" latency {row['latency_ms']:.2f} ms" if row["latency_ms"] is not None else ""
        self.report("round_done", f"round {r}: params {row['params']:,} MACs {row['macs']:,} (-{row['reduction']:.1%})"
                    f"{lat} val acc {acc:.2f}% → {'accepted' if row['accepted'] else 'rejected'}, "
                    f"{decision.action} ({decision.reason}); {seconds:.0f} s{self.eta()}",
                    **{k: v for k, v in row.items() if k not in ("channels", "train", "verification", "timing")})
        return pruned, history, decision

    def round_timing(self) -> dict:
        """Per-round wall time split into training and the rest (scoring, planning, surgery, verification,
        evaluation, checkpoint): the search's overhead beyond the training it buys."""
        path = os.path.join(self.dir, "rounds.jsonl")
        rows = [json.loads(ln) for ln in open(path)] if os.path.exists(path) else []
        timed = [r for r in rows if r.get("timing")]
        wall = sum(r["wall_s"] for r in timed)
        train_s = sum(r["timing"]["train_s"] for r in timed)
        return {"rounds": len(timed), "wall_s": wall, "train_s": train_s,
                "overhead_share": (wall - train_s) / wall if wall else None}

    def eta(self) -> str:
        rounds = self.ctrl.rounds[1:]
        if not rounds:
            return ""
        per = self.ctrl.elapsed_s / len(rounds)
        left = (self.cfg.max_rounds - len(rounds)) * per
        limit = self.ctrl.cfg.time_limit_s
        if limit is not None:
            left = min(left, max(0.0, limit - self.ctrl.elapsed_s))
        return f", ETA ≤ {max(0.0, left) / 60:.0f} min"

    # ------------------------------------------------------------------------------------------- loops
    def run(self) -> dict:
        loaded = self.ctrl.current or 0
        model, history = self.load_round(loaded) if loaded else (self.dense, [])
        while not self.ctrl.stopped:
            if self.epochs_spent + self.cfg.epochs_per_round > self.round_budget + 1e-9:
                self.ctrl.stopped = f"epoch budget for rounds spent ({self.epochs_spent:g} epochs)"
                self.save_state()
                break
            r = len(self.ctrl.rounds)
            if self.ctrl.current != loaded:  # after a rollback (or on resume): continue from that round
                loaded = self.ctrl.current
                model, history = self.load_round(loaded) if loaded else (self.dense, [])
            adaptive = self.cfg.schedule == "adaptive"
            step = self.ctrl.step if adaptive and self.ctrl.size_mode else None
            T = self.ctrl.T if adaptive and step is None else None
            new_model, new_history, _ = self.run_round(r, model, history, T, step=step)
            if self.ctrl.current == r:
                model, history, loaded = new_model, new_history, r
        best = self.ctrl.best_round()
        if best is None and self.target.kind != "accuracy":
            best = self.top_up()
        if best is None:
            raise PrunekitError(f"the search ended ({self.ctrl.stopped}) without a model that meets {self.target.text}")
        return self.deliver(best)

    def top_up(self) -> int:
        """No round met the budget: prune the most reduced acceptable round to the target and retrain once
        (latency: to the table's predicted target, asking a little more each time the prediction missed)."""
        k = max((x for x in self.ctrl.rounds if x["accepted"]), key=lambda x: x["reduction"])["round"]
        base, history = self.load_round(k) if k else (self.dense, [])
        self.report("top_up", f"no round met {self.target.text}: pruning round {k} to the target and retraining")
        for attempt in range(10):
            r = len(self.ctrl.rounds)
            if self.target.kind == "latency":  # the table's units: the goal as a share of the dense table time
                goal = table_goal(self.info["latency_ms"], self.info["latency_table_ms"],
                                  self.target.amount) * 0.97 ** attempt
            else:
                dense_total = self.info["params"] if self.target.kind == "params" else self.info["macs"]
                goal = (1 - self.target.amount) * dense_total

            def plan_fn(scores, cost, goal=goal):
                kind = self.target.kind
                now = {"params": cost.dense_params, "macs": cost.dense_macs, "latency": cost.dense_latency}[kind]
                plan, _, used = plan_for_target_aligned(scores, cost, kind, min(0.999, 1 - goal / now),
                                                        self.round_to, self.cfg.round_to == "auto", self.cost_by)
                if used != self.round_to:
                    self.report("alignment", f"warning: {self.target.text} is out of reach with multiples of "
                                f"{self.round_to} channels; the top-up aligns to {used}")
                return plan

            self.run_round(r, base, history, None, plan_override=plan_fn)
            if self.ctrl.meets_target(self.ctrl.rounds[-1]):
                return r
        raise PrunekitError(f"could not reach {self.target.text} after pruning to it")

    # ------------------------------------------------------------------------------------------- delivery
    def deliver(self, best: int) -> dict:
        model, history = self.load_round(best)
        size = self.spec.input_size
        dense_count, count = count_model(self.dense, size), count_model(model, size)
        row = next(x for x in self.ctrl.rounds if x["round"] == best)
        final = None
        if self.final_epochs > 0:  # retrain the chosen mask (the paper's last step) with the rest of the budget
            self.report("final", f"fine-tuning the delivered round {best} for {self.final_epochs:g} epoch(s)")
            final = train(model, self.bundle, TrainConfig(self.final_epochs, self.cfg.lr, batch_size=self.cfg.batch_size,
                                                          seed=self.cfg.seed * 7 + 1, train_fraction=self.cfg.train_fraction),
                          self.report.log if self.rank == 0 else None, self.compute)
            check_replicas_agree(model)
            final["val_accuracy"] = _broadcast(evaluate(model, self.bundle, self.bundle.val, compute=self.compute))
        accuracy = {"split": "test", "images": len(self.bundle.test) if self.bundle.test is not None else 0,
                    "dense": evaluate(self.dense, self.bundle, self.bundle.test, compute=self.compute),
                    "pruned": evaluate(model, self.bundle, self.bundle.test, compute=self.compute),
                    "val_dense": self.info["val_accuracy"],
                    "val_pruned": final["val_accuracy"] if final else row["accuracy"]}
        checks = []
        export_report = None
        if self.rank == 0:
            save_pruned(os.path.join(self.dir, "pruned.pt"), model, self.spec, history)
            save_check_inputs(self.dir, self.check_images[:self.cfg.check_images], self.bundle.mean, self.bundle.std)
            checks.append(check_reloads(self.dir, model, self.verify_inputs, self.cfg.atol))
            if self.cfg.export:
                export_report = export_onnx(model, self.verify_inputs[:16], os.path.join(self.dir, "model.onnx"),
                                            atol=self.cfg.atol).to_dict()
        rounds_run = len(self.ctrl.rounds) - 1
        run = {
            "prunekit_run": 1,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()},
            "model": self.spec.to_dict(),
            "compute": self.compute.to_dict(),
            "data": {"spec": self.cfg.data, "name": self.bundle.name, "train": len(self.bundle.train),
                     "val": len(self.bundle.val), "test": len(self.bundle.test) if self.bundle.test is not None else 0},
            "target": {"kind": self.target.kind, "amount": self.target.amount, "text": self.target.text,
                       "met": self.ctrl.meets_target(row) if self.target.kind != "accuracy" else row["accepted"]},
            "search": {"schedule": self.cfg.schedule, "rounds": rounds_run, "chosen_round": best,
                       "stopped": self.ctrl.stopped, "wall_s": self.ctrl.elapsed_s,
                       "rollbacks": sum(self.ctrl.rollbacks.values()), "final_T": self.ctrl.T,
                       "final_lambda": self.ctrl.lam, "step_mode": self.cfg.step_mode,
                       "epochs": {"rounds": self.epochs_spent, "final": self.final_epochs if final else 0.0,
                                  "total": self.epochs_spent + (self.final_epochs if final else 0.0),
                                  "budget": self.cfg.budget_epochs, "per_round": self.cfg.epochs_per_round},
                       "round_timing": self.round_timing()},
            "final_finetune": final,
            "dense": {**dense_count.to_dict(layers=False), "latency_ms": self.info.get("latency_ms")},
            "pruned": {**count.to_dict(layers=False),
                       "latency_ms": self.latency(model) if self.target.kind == "latency" else None,
                       "predicted_latency_ms": self.predicted_latency(model) if self.target.kind == "latency"
                       else None},
            "reduction": {"params": 1 - count.params / dense_count.params, "macs": 1 - count.macs / dense_count.macs},
            "layers": layer_channels(dense_count, count),
            "accuracy": accuracy,
            "speed": timed_speed(self.dense, model, size, self.cfg, lambda m: self.report("speed", m), self.bundle)
            if self.rank == 0 else None,
            "alignment": self.info.get("alignment"),
            "verification": checks,
            "export": export_report,
        }
        if self.rank == 0:
            atomic_write_json(os.path.join(self.dir, "run.json"), run)
            from .report import write_report

            write_report(self.dir)
        return run


def _read_resume_state(out: str) -> dict:
    path = os.path.join(out, "search", "state.json")
    if not os.path.isfile(path):
        raise PrunekitError(f"{out} has no search to resume (no search/state.json)")
    state = read_json(path, "search state")
    with user_input(f"{path} is damaged (delete the run folder and start again)"):
        if not isinstance(state, dict):
            raise TypeError("not a JSON object")
        Controller.from_state(state["controller"])
        saved = dict(state["config"])
        saved["input_size"] = tuple(saved["input_size"]) if saved.get("input_size") else None
        state["config"] = PruneConfig(**saved)
        missing = {"params", "macs", "val_accuracy", "scales"} - set(state["dense"])
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    return state


def run_search(cfg: PruneConfig, log: Callable[[str], None] = lambda s: None, resume: bool = False,
               trust_code: bool = False) -> dict:
    """Run (or resume) the adaptive / fixed-rate search; writes the run folder and returns run.json.

    On resume the configuration is the saved run's, except its budgets (``max_rounds``, ``time_limit``,
    ``log_format``, when given) and trust: ``cfg.trust_pickle`` and ``trust_code`` are the caller's, never
    the state file's, so a run folder cannot grant itself the right to run code."""
    state = None
    if resume:
        state = _read_resume_state(cfg.out)
        saved: PruneConfig = state["config"]
        for knob in ("max_rounds", "time_limit", "log_format"):
            if getattr(cfg, knob) is not None:
                setattr(saved, knob, getattr(cfg, knob))
        saved.out, saved.trust_pickle = cfg.out, cfg.trust_pickle
        cfg = saved
        target = cfg.validate(check_out=False)
        done = len(state["controller"]["rounds"])
        path = os.path.join(cfg.out, "rounds.jsonl")
        if distributed()[0] == 0 and os.path.exists(path):  # drop a row written after the last saved state
            with open(path) as f, user_input(f"{path} is damaged"):
                rows = [ln for ln in f if ln.strip() and json.loads(ln)["round"] < done]
            atomic_write_bytes(path, "".join(rows).encode())
    else:
        target = cfg.validate()
        if cfg.schedule == "oneshot":
            raise PrunekitError("run_search runs the adaptive and fixed schedules")
        trust_code = True  # the caller named the model
    search = Search(cfg, target, log, trust_code=trust_code)
    torch.manual_seed(cfg.seed)
    try:
        search.setup(state)  # everything that can fail on bad input fails here, before anything is written
    except KeyboardInterrupt:
        raise Interrupted("interrupted before the search started; nothing was written") from None
    try:
        if state is None:
            if distributed()[0] == 0 and cfg.overwrite and os.path.isdir(cfg.out):
                import shutil

                shutil.rmtree(cfg.out)
            if distributed()[1] > 1:
                dist.barrier()
            search.start()
        else:
            search.ctrl.cfg.max_rounds = cfg.max_rounds
            search.ctrl.cfg.time_limit_s = parse_duration(cfg.time_limit)
            if search.ctrl.stopped and search.ctrl.stopped.startswith(("round budget", "time budget")):
                search.ctrl.stopped = None
            search.report("resume", f"resuming after round {len(search.ctrl.rounds) - 1}")
        return search.run()
    except KeyboardInterrupt:
        raise Interrupted(_interrupted_message(cfg.out)) from None


def _interrupted_message(out: str) -> str:
    """What a Ctrl-C left behind: finished rounds can be resumed; a folder without one is removed."""
    path = os.path.join(out, "search", "state.json")
    if os.path.isfile(path):
        try:
            done = len(read_json(path)["controller"]["rounds"]) - 1
        except (PrunekitError, KeyError, TypeError):
            done = None
        rounds = f"{done} finished pruning round(s)" if done is not None else "its finished rounds"
        return (f"interrupted; {out} keeps {rounds} and their checkpoints. "
                f"Continue with: prunekit prune --resume {out}")
    if distributed()[0] == 0 and os.path.isdir(out):
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    return f"interrupted before the first round was saved; nothing was kept ({out} removed)"
