"""The end of a search: the chosen round, fine-tuned with the rest of the budget (the paper retrains the
chosen mask), evaluated on the test split, written as ``pruned.pt`` (proven to reload), exported to ONNX,
timed against the dense model, and described in ``run.json`` and the report."""
from __future__ import annotations

import os

from prunekit.config import config_dict, TargetKind
from prunekit.compute.ddp import check_replicas_agree
from prunekit.deploy.export import export_onnx
from prunekit.core.metrics import count_model
from prunekit.progress import info, warn
from prunekit.compute.fidelity import agreement
from prunekit.jobs.readings import StageReadings
from prunekit.jobs.finish import check_reloads, data_section, size_sections, timed_speed
from prunekit.runs.report import write_report
from prunekit.runs.record import RunRecord
from prunekit.runs.storage import save_check_inputs, save_pruned
from prunekit.compute.recovery import training_schedule


def deliver(search, best: int) -> dict:
    """Finish ``search`` (a :class:`prunekit.jobs.search.loop.Search`) with round ``best``; returns the run record."""
    ctx, ctrl, cfg, rank = search.ctx, search.ctrl, search.ctx.cfg, search.ctx.rank
    bundle = ctx.bundle
    model, history = search.store.load_round(best)
    size = ctx.spec.input_size
    dense_count, count = count_model(ctx.dense, size), count_model(model, size)
    row = next(x for x in ctrl.rounds if x["round"] == best)
    final = None
    if search.final_epochs > 0:
        info(f"fine-tuning the delivered round {best} for {search.final_epochs:g} epoch(s)", "final")
        final = search.recovery.retrain(model, training_schedule(cfg.training, search.final_epochs,
                                                                 cfg.seed * 7 + 1))
        check_replicas_agree(model)
        final["val_accuracy"] = search.recovery.read(model)
    accuracy, fidelity = _readings(search, model, final["val_accuracy"] if final else row["accuracy"])
    checks, export_report = [], None
    if rank == 0:
        save_pruned(os.path.join(search.store.dir, "pruned.pt"), model, ctx.spec, history)
        save_check_inputs(search.store.dir, ctx.check_images[:cfg.check_images], bundle.mean, bundle.std)
        checks.append(check_reloads(search.store.dir, model, ctx.verify_inputs, cfg.atol))
        if cfg.export:
            export_report = export_onnx(model, ctx.verify_inputs[:16], os.path.join(search.store.dir, "model.onnx"),
                                        atol=cfg.atol).to_dict()
    final_epochs = search.final_epochs if final else 0.0
    latency = ctx.target.kind == TargetKind.latency
    sizes = size_sections(dense_count, count)
    sizes["dense"]["latency_ms"] = ctx.info.get("latency_ms")
    sizes["pruned"].update(latency_ms=ctx.latency(model) if latency else None,
                           predicted_latency_ms=ctx.predicted_latency(model) if latency else None)
    measured = {}
    if latency:  # rounds are judged on the table's prediction; the delivered model is measured: say both
        ms, goal = sizes["pruned"]["latency_ms"], ctx.target.amount
        measured = {"measured_ms": ms, "measured_met": ms <= goal}
        if ms > goal:
            warn(f"the delivered model measures {ms:.3f} ms at batch {ctx.latency_batch} on {cfg.runtime}, over the "
                 f"target's {goal:.3f} ms ({ctx.target.text}); the rounds met it on the latency table's prediction "
                 f"({sizes['pruned']['predicted_latency_ms']:.3f} ms). One-shot measures every plan and refuses a goal "
                 "out of reach: try --schedule oneshot, or ask for a little more", measured_ms=ms, goal_ms=goal)
    record = RunRecord(
        config=config_dict(cfg),
        model=ctx.spec.to_dict(),
        compute=ctx.compute.to_dict(),
        data=data_section(cfg, bundle, val_used=len(ctx.val)),
        target={"kind": ctx.target.kind, "amount": ctx.target.amount, "text": ctx.target.text,
                "met": row["accepted"] if ctx.target.bounds_quality else ctrl.meets_target(row), **measured,
                **({"speedup": ctx.speedup, "batch": ctx.latency_batch} if ctx.speedup else {})},
        search={"schedule": cfg.schedule, "rounds": len(ctrl.rounds) - 1, "chosen_round": best,
                "stopped": ctrl.stopped, "wall_s": ctrl.elapsed_s, "rollbacks": sum(ctrl.rollbacks.values()),
                "final_T": ctrl.T, "final_lambda": ctrl.lam, "step_mode": cfg.step_mode,
                "epochs": {"rounds": search.epochs_spent, "final": final_epochs,
                           "total": search.epochs_spent + final_epochs, "budget": cfg.budget_epochs,
                           "per_round": cfg.epochs_per_round},
                "round_timing": search.store.round_timing(),
                "frozen_inexact": sorted(search.planner.frozen)},
        final_finetune=final,
        **sizes,
        accuracy=accuracy,
        fidelity=fidelity,
        speed=timed_speed(ctx.dense, model, size, cfg, bundle) if rank == 0 else None,
        alignment=ctx.info.get("alignment"),
        recovery={"bn_images": cfg.training.bn_images, "distill": search.recovery.teacher is not None,
                  "allocate": cfg.allocate},
        verification=checks,
        export=export_report,
    )
    if rank == 0:
        record.write(search.store.dir)
        write_report(search.store.dir)
    return record.to_dict()


def _readings(search, model, val_pruned: float | None) -> tuple[dict | None, dict | None]:
    """(accuracy, fidelity) sections of the delivered model: the rounds' measure (``search.recovery.read_on``) on
    the test split, with its validation figures; under a ``fidelity=`` target the one-shot job's sections
    (per-output fidelity, and accuracy where there are labels) with the worst output's agreement beside them
    (the dense model agrees with itself: 100)."""
    ctx, bundle = search.ctx, search.ctx.bundle
    validation = {"val_dense": ctx.info["val_accuracy"], "val_pruned": val_pruned}
    if ctx.target.kind != TargetKind.fidelity:
        read = search.recovery.read_on
        return {"split": "test", "images": len(bundle.test) if bundle.test is not None else 0,
                "dense": read(ctx.dense, bundle.test), "pruned": read(model, bundle.test), **validation}, None
    cfg = ctx.cfg
    readings = StageReadings(ctx.dense, bundle, ctx.compute, cfg.eval_images, cfg.training.distill_loss,
                             ctx.spec.num_classes or bundle.num_classes)
    readings.read("pruned", model)  # one pass: the worst output's agreement is read off the per-output figures
    per_output = readings.fidelity.get("pruned", {})
    worst = {"measure": "the worst output's agreement with the dense model, %", "dense": 100.0,
             "pruned": min((agreement(m) for m in per_output.values()), default=None), **validation}
    return readings.accuracy or None, {**readings.fidelity, "worst_output": worst}
