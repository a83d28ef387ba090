"""One-shot planning for a ``latency=`` / ``speedup=`` goal: plan on the latency table's prediction, cut, measure
the pruned model for real on the runtime, and plan again on a miss (bisecting back on an overshoot), so that
what is delivered meets the goal as measured, not as predicted."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prunekit.config import OneShotConfig, Target, TargetKind, cost_basis
from prunekit.core.allocate import plan_to_target
from prunekit.core.surgery import apply_plan
from prunekit.errors import OutOfReach, PrunekitError
from prunekit.deploy.latency_table import fixed_and_scaled, predict_ms
from prunekit.progress import info


@dataclass
class LatencyPlan:
    """What one-shot planning for a ``latency=`` / ``speedup=`` goal delivers: the plan and its pruned model, what
    the target counts as reached (the measured speedup or ms; the predicted speedup when planned on another
    device's table) and whether that meets it, and the record for ``run.json``'s ``latency`` section."""
    plan: dict
    threshold: float | None
    pruned: torch.nn.Module
    history: list
    round_to: int
    reached: float
    met: bool
    record: dict



def plan_for_latency(model, spec, groups, scores, cost, target: Target, round_to: int, cfg: OneShotConfig,
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
        return LatencyPlan(plan, T, pruned, history, used, predicted, predicted >= target.amount, {
            "runtime": cfg.runtime, "threads": cost.table.threads, "batch": batch, "round_to": used,
            "table": cfg.latency_table, "device": cost.table.device, "predicted_speedup": predicted,
            "met": predicted >= target.amount, "tries": []})

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
    reached = dense_ms / last["measured_ms"] if target.kind == TargetKind.speedup else last["measured_ms"]
    return LatencyPlan(plan, T, pruned, history, used, reached, last["met"], {
        "runtime": cfg.runtime, "threads": cfg.latency_threads, "batch": batch, "round_to": used,
        "dense_ms": dense_ms, "goal_ms": goal_ms, **{k: v for k, v in last.items() if k != "amount"},
        "tries": search.tries})


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
