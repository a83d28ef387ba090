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
from prunekit.errors import PrunekitError
from prunekit.data.inputs import sample_images, sample_inputs
from prunekit.deploy.latency_table import table_for
from prunekit.core.allocate import plan_to_target
from prunekit.core.branches import branch_importance, dropped_blocks, mark_branches
from prunekit.core.costmodel import cost_model
from prunekit.compute.recovery import recalibrate, teacher_for, training_schedule
from prunekit.core.metrics import count_model
from prunekit.progress import info, warn
from prunekit.jobs.latency_plan import LatencyPlan, plan_for_latency
from prunekit.jobs.finish import data_section, size_sections, timed_speed, write_run_folder
from prunekit.jobs.readings import StageReadings, validation_judge
from prunekit.jobs.setup import prepare_job, prunable_groups
from prunekit.runs.record import RunRecord
from prunekit.deploy.runtime import resolve_round_to
from prunekit.core.scoring import score_groups
from prunekit.core.surgery import cut_and_verify
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
    latency: LatencyPlan | None
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
        threshold=cut.threshold, cost=cut.basis, latency=cut.latency.record if cut.latency else None,
        alignment=cut.alignment.to_dict(),
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
            latency = plan_for_latency(model, spec, groups, scores, cost, target, alignment[0].round_to, cfg,
                                        branch_values)
            plan, T, pruned, history, used = (latency.plan, latency.threshold, latency.pruned, latency.history,
                                              latency.round_to)
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
    if cut.latency is not None:
        reached, met = cut.latency.reached, cut.latency.met
    else:
        reached = 1 - (pruned_count.params / dense_count.params if target.kind == TargetKind.params
                       else pruned_count.macs / dense_count.macs)
        met = reached >= target.amount
        if not met:
            raise PrunekitError(f"internal error: target {target.text} not met ({reached:.2%})")
    info(f"pruned: params {dense_count.params:,} → {pruned_count.params:,}, MACs {dense_count.macs:,} → "
         f"{pruned_count.macs:,}; masked == pruned within {cut.verification[0]['max_abs_diff']:.2g}")
    return dense_count, pruned_count, reached, met


def _judged_now(bn: dict | None) -> float | None:
    """What the validation judge last read on the model as it now is (after BatchNorm re-estimation, kept or
    undone), so the fine-tune's "before" is not read twice; None when BatchNorm was not judged."""
    if not bn or bn.get("judged_before") is None:
        return None
    return bn["judged_after"] if bn["kept"] else bn["judged_before"]


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
        before = None if judge is None else _judged_now(bn) or judge(pruned)
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
