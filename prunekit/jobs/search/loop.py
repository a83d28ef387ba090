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

import math
import os
import shutil
import time
from dataclasses import replace

import torch

from prunekit.config import SearchConfig, Target, check_paths, parse_duration, TargetKind
from prunekit.compute.ddp import barrier, broadcast_value, check_replicas_agree
from prunekit.jobs.search.delivery import deliver
from prunekit.errors import Interrupted, PrunekitError
from prunekit.deploy.latency_table import table_goal
from prunekit.models import load_state
from prunekit.progress import info
from prunekit.jobs.search.recovery import RoundRecovery
from prunekit.jobs.search.policy import Controller, FixedRateController, PolicyConfig, RoundResult, Stop
from prunekit.jobs.search.planner import RoundPlanner
from prunekit.jobs.search.store import RunStore, interrupted_message, read_resume_state
from prunekit.jobs.search.context import SearchContext, prepare
from prunekit.core.surgery import replay
from prunekit.compute.train import evaluate, train


def split_budget(cfg: SearchConfig, target: Target) -> tuple[float, float]:
    """(final fine-tune epochs, epochs for the rounds) of ``--budget-epochs`` (final default: half); sets
    ``cfg.epochs_per_round`` to share the rounds' part over the rounds a size-step (or fixed-rate) search
    needs to reach a params / MACs target (at most ``max_rounds``)."""
    final = _final_epochs(cfg)
    if cfg.budget_epochs is None:
        return final, float("inf")
    rounds = cfg.max_rounds
    if target.kind.sizes and (cfg.schedule == "fixed" or cfg.step_mode == "size"):
        step = cfg.rate if cfg.schedule == "fixed" else cfg.max_step
        rounds = min(rounds, math.ceil(math.log(1 - target.amount) / math.log(1 - step) - 1e-9))
    cfg.epochs_per_round = (cfg.budget_epochs - final) / max(1, rounds)
    return final, cfg.budget_epochs - final


def new_controller(ctx: SearchContext) -> Controller:
    cfg, target, info = ctx.cfg, ctx.target, ctx.info
    amount = 1 - target.amount / info["latency_ms"] if target.kind == TargetKind.latency else target.amount
    controller = FixedRateController if cfg.schedule == "fixed" else Controller
    # the controller bounds one quality measure in percent: accuracy, or fidelity to the dense model
    kind = TargetKind.accuracy if target.bounds_quality else target.kind
    return controller(PolicyConfig(kind, amount, dense_accuracy=info["val_accuracy"], lam=cfg.lam,
                                   slack=cfg.slack, max_rounds=cfg.max_rounds,
                                   time_limit_s=parse_duration(cfg.time_limit), step_mode=cfg.step_mode,
                                   max_step=cfg.max_step))


class Search:
    """The round loop: the controller decides, the planner prunes, :class:`RoundRecovery` retrains and reads
    (``trainer`` / ``evaluator`` injected), the store keeps every round;
    :func:`prunekit.jobs.search.delivery.deliver` finishes."""

    def __init__(self, ctx: SearchContext, ctrl: Controller, store: RunStore, final_epochs: float = 0.0,
                 round_budget: float = float("inf"), trainer=train, evaluator=evaluate):
        self.ctx, self.ctrl, self.store = ctx, ctrl, store
        self.final_epochs, self.round_budget = final_epochs, round_budget
        self.planner = RoundPlanner(ctx)
        self.recovery = RoundRecovery(ctx, trainer, evaluator)
        self.epochs_spent = (len(ctrl.rounds) - 1) * ctx.cfg.epochs_per_round if ctrl.rounds else 0.0

    def save_state(self) -> None:
        self.store.save_state(self.ctx.cfg, self.ctx.info, self.ctrl)

    def start(self) -> None:
        """Round 0: the dense model, acceptable by definition (first files of the run folder)."""
        if self.ctx.rank == 0:
            os.makedirs(os.path.join(self.store.dir, "search"), exist_ok=True)
        self.store.save_round(0, self.ctx.dense, [])
        self.finish_round(0, self.ctx.dense, 0.0, self.ctx.info["val_accuracy"], 0.0, 0)

    def finish_round(self, r: int, model, T: float, acc: float | None, seconds: float, removed: int,
                     extra: dict | None = None):
        """Measure round r, let the controller decide, append rounds.jsonl and save the search state."""
        ctx = self.ctx
        size, red, lat, c = ctx.size_of(model)
        if r == 0:  # the dense model: nothing removed, its latency measured
            red, lat = 0.0, ctx.info.get("latency_ms")
        decision = self.ctrl.observe(RoundResult(r, T, float(size), red, acc, seconds))
        last = self.ctrl.rounds[-1]
        row = {"round": r, "T": T, "lambda": last["lam"], "params": c.params, "macs": c.macs,
               "reduction": red, "val_accuracy": acc, "latency_ms": lat,
               "latency_predicted": lat is not None and r > 0, "removed_channels": removed,
               "channels": {layer.name: layer.out_channels for layer in c.layers},
               "accepted": last["accepted"], "decision": decision.action, "reason": decision.reason,
               "wall_s": seconds, **(extra or {})}
        self.store.append_row(row)
        self.save_state()
        return decision, row

    def run_round(self, r: int, base, base_history: list, T: float | None, plan_override=None,
                  step: float | None = None):
        ctx, cfg, t0 = self.ctx, self.ctx.cfg, time.perf_counter()
        pruned, hist, plan, T, check = self.planner.prune(base, T, cfg.seed + r, plan_override, step)
        removed = sum(map(len, plan.values()))
        if removed == 0:  # nothing left that the rules may remove: retraining an unchanged model is waste
            self.ctrl.end(Stop.nothing_left, "nothing left to prune")
            self.save_state()
            return None, None
        history = base_history + hist
        if ctx.rewind_weights is not None:  # weight rewinding: early weights, pruned by the same history
            pruned = ctx.build_dense()
            load_state(pruned, ctx.rewind_weights, "rewind checkpoint")
            replay(pruned, history, ctx.spec.input_size)
        how = "fixed plan" if T is None else f"T={T:.4f} λ={self.ctrl.lam:.4g}" + (
            f" step {step:.1%}" if step is not None else "")
        info(f"round {r}: {how} removing {removed} channels; retraining {cfg.epochs_per_round:g} epoch(s)", "round",
             round=r, T=T, removed=removed)
        t_prune = time.perf_counter() - t0
        recovery = self.recovery
        bn_s = recovery.recalibrate(pruned, cfg.seed + r)  # the surgery left the dense model's statistics
        summary = recovery.retrain(pruned, recovery.schedule(r))
        self.epochs_spent += cfg.epochs_per_round
        bn_s += recovery.recalibrate(pruned, cfg.seed + r)  # the reading the controller decides on
        check_replicas_agree(pruned)
        t1 = time.perf_counter()
        acc = recovery.read(pruned)
        self.store.save_round(r, pruned, history)
        seconds = broadcast_value(time.perf_counter() - t0)
        timing = {"prune_s": t_prune, "bn_s": bn_s, "train_s": summary["seconds"],
                  "evaluate_and_save_s": time.perf_counter() - t1}
        decision, row = self.finish_round(r, pruned, T if T is not None else 0.0, acc, seconds, removed,
                                          {"train": summary, "verification": check, "timing": timing,
                                           "epochs_spent": self.epochs_spent})
        lat = f" latency {row['latency_ms']:.2f} ms" if row["latency_ms"] is not None else ""
        info(f"round {r}: params {row['params']:,} MACs {row['macs']:,} (-{row['reduction']:.1%}){lat} val acc "
             f"{acc:.2f}% → {'accepted' if row['accepted'] else 'rejected'}, {decision.action} ({decision.reason}); "
             f"{seconds:.0f} s{self.eta()}", "round_done",
             **{k: v for k, v in row.items() if k not in ("channels", "train", "verification", "timing")})
        return pruned, history

    def eta(self) -> str:
        rounds = self.ctrl.rounds[1:]
        if not rounds:
            return ""
        left = (self.ctx.cfg.max_rounds - len(rounds)) * self.ctrl.elapsed_s / len(rounds)
        if self.ctrl.cfg.time_limit_s is not None:
            left = min(left, max(0.0, self.ctrl.cfg.time_limit_s - self.ctrl.elapsed_s))
        return f", ETA ≤ {max(0.0, left) / 60:.0f} min"

    def load(self, r: int):
        return self.store.load_round(r) if r else (self.ctx.dense, [])

    def run(self) -> dict:
        ctrl, cfg = self.ctrl, self.ctx.cfg
        loaded = ctrl.current or 0
        model, history = self.load(loaded)
        while not ctrl.stopped:
            if self.epochs_spent + cfg.epochs_per_round > self.round_budget + 1e-9:
                ctrl.end(Stop.epoch_budget, f"epoch budget for rounds spent ({self.epochs_spent:g} epochs)")
                self.save_state()
                break
            r = len(ctrl.rounds)
            if ctrl.current != loaded:  # after a rollback (or on resume): continue from that round
                loaded = ctrl.current
                model, history = self.load(loaded)
            step = ctrl.step if cfg.schedule == "adaptive" and ctrl.size_mode else None
            T = ctrl.T if cfg.schedule == "adaptive" and step is None else None
            new_model, new_history = self.run_round(r, model, history, T, step=step)
            if ctrl.current == r:
                model, history, loaded = new_model, new_history, r
        best = ctrl.best_round()
        if best is None and not self.ctx.target.bounds_quality:
            best = self.top_up()
            over = self.epochs_spent - self.round_budget
            if over > 1e-9 and self.final_epochs > 0:  # the budget is the total: the top-up's epochs come off the end
                self.final_epochs = max(0.0, self.final_epochs - over)
                info(f"the top-up round went {over:g} epoch(s) past the rounds' budget: the final fine-tune gets "
                     f"{self.final_epochs:g}", "budget")
        if best is None:
            raise PrunekitError(f"the search ended ({ctrl.stopped}) without a model that meets {self.ctx.target.text}")
        return deliver(self, best)

    def top_up(self) -> int:
        """No round met the budget: prune the most reduced acceptable round to the target and retrain once
        (latency: to the table's predicted target, asking a little more each time the prediction missed)."""
        ctx, target = self.ctx, self.ctx.target
        k = max((x for x in self.ctrl.rounds if x["accepted"]), key=lambda x: x["reduction"])["round"]
        base, history = self.load(k)
        info(f"no round met {target.text}: pruning round {k} to the target and retraining", "top_up")
        for attempt in range(10):
            if target.kind == TargetKind.latency:  # the table's units
                goal = table_goal(ctx.info["latency_ms"], ctx.info["latency_table_ms"], target.amount) * 0.97 ** attempt
            else:
                goal = (1 - target.amount) * ctx.info["params" if target.kind == TargetKind.params else "macs"]
            r = len(self.ctrl.rounds)
            self.run_round(r, base, history, None, plan_override=self.planner.to_target(goal))
            if self.ctrl.meets_target(self.ctrl.rounds[-1]):
                return r
        raise PrunekitError(f"could not reach {target.text} after pruning to it")


def run_search(cfg: SearchConfig, trainer=train, evaluator=evaluate) -> dict:
    """Run the adaptive / fixed-rate search; writes the run folder and returns run.json. ``trainer`` and
    ``evaluator`` default to :func:`prunekit.compute.train.train` / :func:`~prunekit.compute.train.evaluate`."""
    if not isinstance(cfg, SearchConfig):
        raise PrunekitError(f"run_search runs the adaptive and fixed schedules, not {cfg.schedule}")
    check_paths(cfg)
    target = cfg.parsed_target
    # the caller named the model, so its code may run
    return _run(cfg, target, None, True, *split_budget(cfg, target), trainer, evaluator)


def resume_search(out: str, *, max_rounds: int | None = None, time_limit: str | None = None,
                  log_format: str | None = None, trust_pickle: bool = False, trust_code: bool = False,
                  trainer=train, evaluator=evaluate) -> dict:
    """Continue the search saved in ``out`` after its last finished round (it ends where an uninterrupted run
    would). The configuration is the saved run's, except its budgets (``max_rounds``, ``time_limit``,
    ``log_format``, when given) and trust: ``trust_pickle`` and ``trust_code`` are the caller's, never the
    state file's, so a run folder cannot grant itself the right to run code."""
    state = read_resume_state(out)
    budgets = {k: v for k, v in (("max_rounds", max_rounds), ("time_limit", time_limit), ("log_format", log_format))
               if v is not None}
    cfg = replace(state["config"], out=out, trust_pickle=trust_pickle, **budgets)  # re-checks the new budgets
    return _run(cfg, cfg.parsed_target, state, trust_code, *_saved_budget(cfg), trainer, evaluator)


def _run(cfg: SearchConfig, target: Target, state: dict | None, trust_code: bool, final_epochs: float,
         round_budget: float, trainer, evaluator) -> dict:
    torch.manual_seed(cfg.seed)
    try:  # everything that can fail on bad input fails here, before anything is written
        ctx = prepare(cfg, target, trust_code, state, evaluator)
    except KeyboardInterrupt:
        raise Interrupted("interrupted before the search started; nothing was written") from None
    ctrl = Controller.from_state(state["controller"]) if state is not None else new_controller(ctx)
    store = RunStore(cfg.out, ctx.spec, ctx.rank, cfg.trust_pickle, trust_code)
    search = Search(ctx, ctrl, store, final_epochs, round_budget, trainer, ctx.evaluator)
    try:
        if state is None:
            if ctx.rank == 0 and cfg.overwrite and os.path.isdir(cfg.out):
                shutil.rmtree(cfg.out)
            barrier()
            search.start()
        else:
            store.keep_rows_before(len(ctrl.rounds))
            ctrl.cfg.max_rounds = cfg.max_rounds
            ctrl.cfg.time_limit_s = parse_duration(cfg.time_limit)
            ctrl.resume()
            info(f"resuming after round {len(ctrl.rounds) - 1}", "resume")
        return search.run()
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(cfg.out, ctx.rank)) from None


def _final_epochs(cfg: SearchConfig) -> float:
    if cfg.final_epochs is not None:
        return cfg.final_epochs
    return cfg.budget_epochs / 2 if cfg.budget_epochs is not None else 0.0


def _saved_budget(cfg: SearchConfig) -> tuple[float, float]:
    """The budget split of a resumed run: its saved config already holds ``epochs_per_round``."""
    final = _final_epochs(cfg)
    return final, float("inf") if cfg.budget_epochs is None else cfg.budget_epochs - final
