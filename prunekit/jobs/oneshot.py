"""The one-shot prune job: model + data → scores → plan → surgery → verification → fine-tune → run folder.

Everything it writes goes to a temporary folder next to ``out`` that is renamed to ``out`` at the end, so a
failed run leaves nothing half-written.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from prunekit.config import OneShotConfig, Target, check_paths, config_dict, cost_basis, TargetKind
from prunekit.errors import OutOfReach, PrunekitError
from prunekit.data.inputs import sample_images, sample_inputs
from prunekit.deploy.latency_table import fixed_and_scaled, predict_ms, table_for
from prunekit.core.allocate import plan_to_target
from prunekit.core.branches import branch_importance, dropped_blocks, mark_branches
from prunekit.core.costmodel import cost_model
from prunekit.compute.recovery import recalibrate, teacher_for, training_schedule
from prunekit.core.metrics import count_model
from prunekit.progress import info, warn
from prunekit.jobs.finish import data_section, size_sections, timed_speed, write_run_folder
from prunekit.jobs.readings import StageReadings, validation_judge
from prunekit.jobs.setup import prepare_job, prunable_groups
from prunekit.runs.record import RunRecord
from prunekit.deploy.runtime import resolve_round_to
from prunekit.core.scoring import score_groups
from prunekit.core.surgery import apply_plan, cut_and_verify
from prunekit.compute.train import finetune


class Timings(dict):
    """Seconds per step of a job (``run.json`` → ``timings_s``): ``with timings("score"): …``."""

    @contextlib.contextmanager
    def __call__(self, step: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[step] = self.get(step, 0.0) + time.perf_counter() - t0


@dataclass
class _Cut:
    """What planning and surgery produced."""
    plan: dict
    threshold: float | None
    pruned: torch.nn.Module
    history: list
    latency: dict | None
    alignment: object
    verification: list
    cost: object
    basis: str


def prune_oneshot(cfg: OneShotConfig) -> dict:
    """One-shot: plan for the target, prune once, verify, recover (BN re-estimation, fine-tune), write the run."""
    check_paths(cfg)
    target = cfg.parsed_target
    torch.manual_seed(cfg.seed)
    timings = Timings()
    with timings("load"):
        job = prepare_job(cfg)
        if cfg.finetunes and job.bundle.synthetic:
            raise PrunekitError("--finetune-epochs / --finetune-minutes need real images (labelled or not), "
                                "not random")
    info(f"model {cfg.model}: building the dependency graph")
    with timings("graph"):
        groups = prunable_groups(job.model, job.spec, cfg.model)
        branches = mark_branches(job.model, groups) if cfg.drops_branches else 0
    with timings("score"):
        scores, branch_values = _scores(cfg, job, groups, branches)
    with timings("plan_and_surgery"):
        cut = _cut(cfg, job, groups, scores, branch_values, target)
    with timings("verify"):
        dense_count, pruned_count, reached, met = _counts(cut, job, target)
    readings, bn, finetune_summary = _recover(cfg, job, cut.pruned, timings)
    with timings("speed"):
        speed = timed_speed(job.model, cut.pruned, job.spec.input_size, cfg, job.bundle)
    record = RunRecord(
        config=config_dict(cfg), model=job.spec.to_dict(), compute=job.compute.to_dict(),
        data=data_section(cfg, job.bundle),
        target={"kind": target.kind, "amount": target.amount, "text": target.text, "reached": reached, "met": met},
        threshold=cut.threshold, cost=cut.basis, latency=cut.latency, alignment=cut.alignment.to_dict(),
        **size_sections(dense_count, pruned_count),
        groups=[{"root": g.root, "channels": g.channels, "removed": len(cut.plan.get(g.root, [])),
                 "frozen": g.reason, **({"branch": g.branch} if g.branch else {})} for g in groups],
        depth={"mode": cfg.depth, "branches": branches, "criterion": cfg.branch_criterion,
               "dropped": dropped_blocks(cut.pruned), "values": branch_values} if branches else None,
        accuracy=readings.accuracy, fidelity=readings.fidelity or None, finetune=finetune_summary, speed=speed,
        verification=cut.verification,
        recovery={"bn_reestimate": bn, "distill": (finetune_summary or {}).get("distill"), "allocate": cfg.allocate},
        timings_s=dict(timings),
    )
    write_run_folder(cfg.out, record, cut.pruned, job.spec, cut.history, cfg.overwrite,
                     sample_images(job.bundle, cfg.check_images), job.bundle, cfg.atol)
    return record.to_dict()


def _scores(cfg: OneShotConfig, job, groups, branches: int):
    """(channel scores, branch values or None) on the calibration images."""
    info(f"scoring filters with {cfg.criterion} on {min(cfg.calib_images, len(job.bundle.train))} calibration "
         "images")
    calibration = job.calibration_batches(cfg)
    scores = score_groups(job.model, groups, cfg.criterion, cfg.p, calibration, seed=cfg.seed, compute=job.compute)
    if not branches:
        return scores, None
    info(f"{branches} residual branches may be dropped whole; valuing them by {cfg.branch_criterion}")
    return scores, branch_importance(job.model, groups, cfg.branch_criterion, calibration)


def _cut(cfg: OneShotConfig, job, groups, scores, branch_values, target: Target) -> _Cut:
    """The plan for the target (measured on the runtime for latency / speedup targets), cut and verified."""
    model, spec = job.model, job.spec
    timed = target.kind.timed
    basis = cost_basis(cfg.cost, target)
    table = table_for(cfg.runtime, cfg.latency_threads, cfg.latency_table) if timed or basis == "latency" else None
    alignment = [resolve_round_to(cfg.round_to, cfg.runtime, getattr(table, "grid", None), cfg.latency_threads)]
    if table is not None:
        info(f"latency table: timing {model.__class__.__name__}'s layer shapes on {cfg.runtime} at batch "
             f"{cfg.speed_batch if target.kind == TargetKind.speedup else 1}")
    cost = cost_model(model, groups, spec.input_size, threshold_scale=cfg.threshold_scale, group_cap=cfg.group_cap,
                      table=table, batch=cfg.speed_batch if target.kind == TargetKind.speedup else 1)

    def plan_fn(scores):
        if timed:
            plan, T, pruned, history, latency = _plan_for_latency(model, spec, groups, scores, cost, target,
                                                                  alignment[0].round_to, cfg, branch_values)
            used = latency["round_to"]
        else:
            plan, T, used = plan_to_target(scores, cost, target.kind, target.amount, alignment[0].round_to,
                                           cfg.round_to == "auto", basis, cfg.allocate, cfg.knapsack_value,
                                           branch_values)
            pruned = history = latency = None
            if used != alignment[0].round_to:
                warn(f"{target.text} is out of reach with every group a multiple of {alignment[0].round_to} "
                     f"channels; aligned to {used} instead (narrow layers pay for a full "
                     f"{alignment[0].round_to}-channel block on this runtime)")
        if used != alignment[0].round_to:
            alignment[0] = alignment[0].relaxed(used, target.text)
        return plan, pruned, history, (T, latency)
    plan, pruned, history, (threshold, latency), check, _ = cut_and_verify(
        model, groups, scores, plan_fn, sample_inputs(job.bundle, cfg.verify_images), cfg.atol, "for this run")
    if table is not None:  # the shapes planning timed: the next run plans from the same entries, not new noise
        table.save()
    return _Cut(plan, threshold, pruned, history, latency, alignment[0], [check], cost, basis)


def _counts(cut: _Cut, job, target: Target):
    """(dense counts, pruned counts, what the target reached, met): the cost model's prediction must be exact."""
    dense_count, pruned_count = count_model(job.model, job.spec.input_size), count_model(cut.pruned,
                                                                                        job.spec.input_size)
    predicted = cut.cost.predict(cut.plan)
    if predicted != (pruned_count.params, pruned_count.macs):
        raise PrunekitError(f"internal error: predicted (params, MACs) {predicted} but the pruned model has "
                            f"({pruned_count.params}, {pruned_count.macs})")
    latency = cut.latency
    if latency is not None and "predicted_speedup" in latency:  # planned on another device's table
        reached, met = latency["predicted_speedup"], latency["met"]
    elif latency is not None:
        reached, met = latency["measured_ms"], latency["met"]
        if target.kind == TargetKind.speedup:
            reached = latency["dense_ms"] / latency["measured_ms"]
    else:
        reached = 1 - (pruned_count.params / dense_count.params if target.kind == TargetKind.params
                       else pruned_count.macs / dense_count.macs)
        met = reached >= target.amount
        if not met:
            raise PrunekitError(f"internal error: target {target.text} not met ({reached:.2%})")
    info(f"pruned: params {dense_count.params:,} → {pruned_count.params:,}, MACs {dense_count.macs:,} → "
         f"{pruned_count.macs:,}; masked == pruned within {cut.verification[0]['max_abs_diff']:.2g}")
    return dense_count, pruned_count, reached, met


def _recover(cfg: OneShotConfig, job, pruned, timings: Timings):
    """Readings after surgery, BatchNorm re-estimation (and readings), the fine-tune (and readings)."""
    compute, bundle, spec = job.compute, job.bundle, job.spec
    with timings("evaluate"):
        readings = StageReadings(job.model, bundle, compute, cfg.eval_images, cfg.training.distill_loss,
                                 spec.num_classes or bundle.num_classes)
        readings.read("pruned", pruned)
    judge = validation_judge(job, readings)
    bn = recalibrate(pruned, bundle, cfg.training, cfg.seed, compute, judge)  # after the masked == pruned proof
    if bn is not None:
        timings["bn_reestimate"] = bn["seconds"]
        readings.read("pruned_bn", pruned)
    if not cfg.finetunes:
        return readings, bn, None
    with timings("finetune"):
        teacher = teacher_for(job.model, bundle, cfg.training)
        length = " and ".join(([f"{cfg.finetune_epochs:g} epoch(s)"] if cfg.finetune_epochs > 0 else [])
                              + ([f"{cfg.finetune_minutes:g} min"] if cfg.finetune_minutes > 0 else []))
        info(f"fine-tuning {length}" + (" at most" if cfg.finetune_epochs > 0 and cfg.finetune_minutes > 0 else "")
             + (" distilled from the dense model" if teacher else "")
             + ("" if bundle.has_labels else ", no labels") + f" ({compute.amp_words})")
        schedule = training_schedule(cfg.training, cfg.finetune_epochs, cfg.seed,
                                     spec.num_classes or bundle.num_classes, minutes=cfg.finetune_minutes)
        before = judge(pruned) if judge is not None else None
        saved = {k: v.detach().clone() for k, v in pruned.state_dict().items()} if before is not None else None
        summary = finetune(pruned, bundle, schedule, compute=compute, teacher=teacher)
        if before is not None:
            after = judge(pruned)
            summary.update(judged_before=before, judged_after=after, kept=after is None or after >= before)
            if not summary["kept"]:  # never deliver less than the model had before it was retrained
                pruned.load_state_dict(saved)
                warn(f"fine-tuning read worse on validation images ({after:.2f} vs {before:.2f} before it): "
                     "delivered the model as it was before fine-tuning (check the learning rate, or the dense "
                     "model: an untrained teacher teaches nothing)")
        readings.read("pruned_finetuned", pruned)
    return readings, bn, summary


def _plan_for_latency(model, spec, groups, scores, cost, target: Target, round_to: int, cfg: OneShotConfig,
                      branch_values=None):
    """One-shot to ``latency=MS`` (batch 1) or ``speedup=X`` (at the config's ``speed_batch``): plan with the latency
    table's prediction, then measure the pruned model for real; if it misses (the table is a model of the
    runtime, not the runtime), ask for more and try again."""
    from prunekit.deploy.speed import compare_speed, model_latency_ms

    batch = cfg.speed_batch if target.kind == TargetKind.speedup else 1
    if cost.table.fixed:  # the target device's table: plan on its prediction; this machine is not the target
        plan, T, used = plan_to_target(scores, cost, "latency", 1 - 1 / target.amount, round_to,
                                       cfg.round_to == "auto", cost_basis(cfg.cost, target), cfg.allocate,
                                       cfg.knapsack_value, branch_values)
        pruned, history = apply_plan(model, groups, plan, spec.input_size)
        predicted = cost.dense_latency / cost.predict_latency(plan)
        info(f"planned on {cfg.latency_table} ({cost.table.device.get('cpu', 'another device')}): predicted "
             f"{predicted:.2f}× at batch {batch} there (target {target.text}); not measured here")
        return plan, T, pruned, history, {"runtime": cfg.runtime, "threads": cost.table.threads, "batch": batch,
                                          "round_to": used, "table": cfg.latency_table, "device": cost.table.device,
                                          "predicted_speedup": predicted, "met": predicted >= target.amount,
                                          "tries": []}

    def measure(m):
        """(pruned ms in the dense measurement's units, the speedup's 90 % interval or None). Speedup targets time
        the pair interleaved and take the ratio of their fast tails, so drift and load cancel."""
        if target.kind == TargetKind.speedup:
            row = compare_speed(model, m, spec.input_size, cfg.runtime, (batch,), cfg.latency_threads,
                                budget_s=4.0, least=10, most=200)["batches"][0]
            return dense_ms / row["speedup"], (row.get("speedup_low", row["speedup"]),
                                               row.get("speedup_high", row["speedup"]))
        return model_latency_ms(m, spec.input_size, cfg.runtime, cfg.latency_threads, batch=batch,
                                runs=cfg.latency_runs), None
    dense_ms = model_latency_ms(model, spec.input_size, cfg.runtime, cfg.latency_threads, batch=batch,
                                runs=cfg.latency_runs)
    goal_ms = dense_ms / target.amount if target.kind == TargetKind.speedup else target.amount
    if dense_ms <= goal_ms:
        raise PrunekitError(f"the dense model already runs in {dense_ms:.3f} ms on {cfg.runtime} (target "
                            f"{target.text}): nothing to prune for")
    search = _LatencySearch(target, goal_ms, dense_ms, cost.dense_latency, f"{cfg.runtime} at batch {batch}")
    amount, best = 1 - goal_ms / dense_ms, None
    for _ in range(7):
        try:
            plan, T, used = plan_to_target(scores, cost, "latency", min(amount, 0.99), round_to,
                                           cfg.round_to == "auto", cost_basis(cfg.cost, target), cfg.allocate,
                                           cfg.knapsack_value, branch_values)
        except OutOfReach:
            raise PrunekitError(_out_of_reach(target, search.where, dense_ms, search.points, search.tries)) from None
        if search.seen(plan):  # the grid gives the same plan again: nothing new to measure
            break
        pruned, history = apply_plan(model, groups, plan, spec.input_size)
        measured, interval = measure(pruned)
        table_ms = cost.predict_latency(plan)
        attempt = search.record(amount, T, plan, measured, interval, table_ms)
        info(f"latency at batch {batch}: predicted {attempt['predicted_ms']:.3f} ms, measured {measured:.3f} ms "
             f"(dense {dense_ms:.3f} ms, {dense_ms / measured:.2f}×"
             + (f", 90 % interval {interval[0]:.2f}–{interval[1]:.2f}×" if interval else "") + f"; target "
             f"{target.text})" + ("; within the measurement's spread: kept" if attempt["within_spread"] else ""))
        if attempt["met"] and (best is None or amount < best[0]):
            best = (amount, plan, T, used, pruned, history, attempt)
        amount = search.next_amount(amount, attempt["met"])
        if amount is None:
            break
    amount, plan, T, used, pruned, history, last = best or (amount, plan, T, used, pruned, history, attempt)
    return plan, T, pruned, history, {"runtime": cfg.runtime, "threads": cfg.latency_threads, "batch": batch,
                                      "round_to": used, "dense_ms": dense_ms, "goal_ms": goal_ms,
                                      **{k: v for k, v in last.items() if k != "amount"}, "tries": search.tries}


class _LatencySearch:
    """The one-shot search for a latency / speedup goal, as numbers: every plan measured so far, the fit of the
    time that does not shrink with channels, and the next amount of the table to remove. A miss asks for more
    (from the fit); a plan that overshoots by more than its spread and 5 % is followed by one between it and the
    last miss (bisection), so the delivered plan is the least-pruned one that meets the goal. A miss inside the
    measurement's own spread counts as met: planning again would follow the machine's noise."""

    def __init__(self, target: Target, goal_ms: float, dense_ms: float, table_dense: float, where: str):
        self.target, self.goal_ms, self.dense_ms, self.table_dense = target, goal_ms, dense_ms, table_dense
        self.where = where  # "openvino-cpu at batch 32", for the refusal
        self.tries: list[dict] = []
        self.points = [(table_dense, dense_ms)]  # (table sum, measured ms) of every model timed
        self.missed = 0.0  # the largest amount whose plan missed
        self.met_at: float | None = None  # the smallest amount whose plan met
        self._plans: set = set()

    def seen(self, plan) -> bool:
        key = tuple(sorted((r, len(i)) for r, i in plan.items()))
        if key in self._plans:
            return True
        self._plans.add(key)
        return False

    def record(self, amount, T, plan, measured: float, interval, table_ms: float) -> dict:
        strict = measured <= self.goal_ms
        within = interval is not None and not strict and interval[1] >= self.target.amount
        attempt = {"amount": amount, "T": T, "predicted_ms": predict_ms(self.dense_ms, self.table_dense, table_ms),
                   "measured_ms": measured, "speedup": self.dense_ms / measured, "met": strict or within,
                   "within_spread": within, **({"speedup_low": interval[0], "speedup_high": interval[1]}
                                               if interval else {})}
        self.tries.append(attempt)
        self.points.append((table_ms, measured))
        return attempt

    def next_amount(self, amount: float, met: bool) -> float | None:
        """The next share of the table to remove, or None to stop."""
        last = self.tries[-1]
        if met:
            self.met_at = amount if self.met_at is None else min(self.met_at, amount)
            low = last.get("speedup_low", last["speedup"])
            if low <= self.target_speedup * 1.05 or self.met_at - self.missed < 0.01:
                return None  # close enough, or nothing left between a miss and this
            return (self.missed + self.met_at) / 2 if self.missed else None
        self.missed = max(self.missed, amount)
        if amount >= 0.99:
            return None
        fixed, per = fixed_and_scaled(self.points)
        if fixed < self.goal_ms:  # the table share to remove for the fitted time to reach the goal (a step at least)
            nxt = max(amount + 0.02, 1 - (self.goal_ms - fixed) / per / self.table_dense)
        elif len(self.tries) >= 2:  # measured twice: what does not shrink with channels already exceeds the goal
            raise PrunekitError(_out_of_reach(self.target, self.where, self.dense_ms, self.points, self.tries))
        else:  # one noisy point: step on as the proportional model would
            nxt = amount + max((last["measured_ms"] - self.goal_ms) / self.dense_ms, 0.02)
        if self.met_at is not None:  # never past a plan that already met: between the two
            nxt = min(nxt, (self.missed + self.met_at) / 2)
            if self.met_at - self.missed < 0.01:
                return None
        return nxt

    @property
    def target_speedup(self) -> float:
        return self.dense_ms / self.goal_ms


def _out_of_reach(target: Target, where: str, dense_ms: float, points, tries) -> str:
    best = max((t["speedup"] for t in tries), default=None)
    fixed, _ = fixed_and_scaled(points)
    text = f"{target.text} is out of reach on {where}"
    if best is not None:
        text += f": the closest plan measured {best:.2f}× ({len(tries)} tr{'y' if len(tries) == 1 else 'ies'})"
    if fixed > 0:
        text += (f"; about {fixed:.2f} ms of the dense model's {dense_ms:.2f} ms does not shrink with channels, "
                 f"which caps pruning near {dense_ms / fixed:.2f}×")
    return text + " (ask for less, or prune for another runtime)"
