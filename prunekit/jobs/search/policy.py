"""Adaptive threshold controller (METHOD.md §3, Algorithms 2, 4, 5): a small pure object, state in, decision out.

The search loop (``prunekit.jobs.search.loop``) prunes with threshold T, retrains, measures, and asks the controller
what to do next. The controller never touches a model: it sees one :class:`RoundResult` per round.

Rules (per round r, after it was measured):
- *acceptable* (the policy's test, below) and size still changing → keep λ, T ← T + λ;
- acceptable and the size changed by less than ``converge_tol`` (relative) over the last ``patience``
  acceptable rounds → stop (converged);
- not acceptable → find the last acceptable round k not marked unacceptable; if it was already used for
  ``max_rollbacks`` rollbacks, mark it unacceptable and look further back; else roll back to k,
  λ ← λ / 2^(N+1) (N = rollbacks to k so far), T ← T_k + λ;
- stop when the round or time budget is spent, λ underflows, or no acceptable round is left.

Step modes:
- ``threshold`` (the paper): the controller moves T by λ; a rollback halves λ.
- ``size`` (default): the controller moves the *size* — each round removes ``step`` (at most ``max_step``) of
  what is left, and the search turns that into a threshold with the exact cost model (never more than the
  target, never zero channels). A rollback halves the step. A budget round (params / MACs / latency) that is
  accepted and meets the target ends the search: pruning further only costs accuracy.

Policies (what "acceptable" means):
- ``accuracy`` (Alg. 2): val accuracy loss vs the dense model ≤ ``max_loss`` points;
- ``params`` / ``macs`` (Alg. 4, 5) and ``latency``: reduction ≤ target + ``slack`` (the search walks up to the
  target and slows down near it). The delivered round must be accepted *and* meet the target
  (target ≤ reduction ≤ target + slack): :meth:`Controller.best_round` picks the most accurate such round.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

from prunekit.config.targets import TargetKind


@dataclass
class RoundResult:
    round: int
    T: float
    size: float  # params or MACs (whatever is minimised / targeted), absolute
    reduction: float  # 1 - metric / dense metric, for the targeted metric (params, MACs or latency)
    accuracy: float | None  # validation accuracy, percent (None without labels)
    seconds: float = 0.0


@dataclass
class Decision:
    action: str  # "continue" | "rollback" | "stop"
    T: float
    lam: float
    restore_round: int | None = None  # model to continue from (the current one for "continue")
    reason: str = ""
    step: float = 0.0  # size mode: share of the remaining size the next round removes


@dataclass
class PolicyConfig:
    kind: str  # a TargetKind: accuracy (any quality bound) | params | macs | latency
    target: float  # accuracy: max loss in points; others: reduction fraction
    dense_accuracy: float | None = None
    lam: float = 0.005
    slack: float = 0.02
    max_rollbacks: int = 3
    patience: int = 3
    converge_tol: float = 0.001
    max_rounds: int = 50
    time_limit_s: float | None = None
    min_lam: float = 1e-6
    step_mode: str = "size"  # "size" (step a share of the remaining size) or "threshold" (step T by λ)
    max_step: float = 0.25  # size mode: largest share of the remaining size one round removes
    min_step: float = 0.002  # size mode: below this step the search has converged


class Stop(str, Enum):
    """Why a search stopped (a ``str`` enum: stored and compared as its value). ``resumable`` stops are budgets a
    resumed search with a larger budget lifts."""
    converged = "converged"
    target_met = "target met"
    round_budget = "round budget"
    time_budget = "time budget"
    epoch_budget = "epoch budget"
    no_round_left = "no acceptable round left"
    step_underflow = "step underflow"
    accuracy_exceeded = "accuracy loss exceeded"
    nothing_left = "nothing left to prune"

    @property
    def resumable(self) -> bool:
        return self in (Stop.round_budget, Stop.time_budget)


@dataclass
class Controller:
    cfg: PolicyConfig
    T: float = 0.0
    lam: float = 0.0
    rounds: list[dict] = field(default_factory=list)  # RoundResult dicts + "accepted"
    rollbacks: dict[int, int] = field(default_factory=dict)
    unacceptable: set[int] = field(default_factory=set)
    elapsed_s: float = 0.0
    stopped: str | None = None  # why, in words (run.json)
    stop: Stop | None = None  # why, as a value code decides on
    current: int | None = None  # round whose model the next round starts from
    step: float = 0.0  # size mode: share of the remaining size the next round removes

    def __post_init__(self):
        if not self.lam:
            self.lam = self.cfg.lam
        if not self.step:
            self.step = self.cfg.max_step

    @property
    def size_mode(self) -> bool:
        return self.cfg.step_mode == "size"

    # ---------------------------------------------------------------- policy
    def acceptable(self, r: RoundResult) -> bool:
        c = self.cfg
        if c.kind == TargetKind.accuracy:
            if r.accuracy is None or c.dense_accuracy is None:
                raise ValueError("the accuracy policy needs validation accuracies")
            return c.dense_accuracy - r.accuracy <= c.target
        return r.reduction <= c.target + c.slack

    def meets_target(self, r: dict) -> bool:
        if self.cfg.kind == TargetKind.accuracy:
            return r["accepted"]
        return r["reduction"] >= self.cfg.target

    # ---------------------------------------------------------------- decisions
    def observe(self, r: RoundResult) -> Decision:
        ok = self.acceptable(r)
        self.rounds.append({**asdict(r), "accepted": ok, "lam": self.lam})
        self.elapsed_s += r.seconds
        if ok:
            self.current = r.round
        budget = self._budget_spent()
        if ok:
            if self._converged():
                return self._stop(Stop.converged, "converged: size changed < "
                                  f"{self.cfg.converge_tol:.1%} over {self.cfg.patience} rounds")
            if budget:
                return self._stop(*budget)
            if self.size_mode and self.cfg.kind != TargetKind.accuracy and self.meets_target(self.rounds[-1]):
                return self._stop(Stop.target_met, "target met")
            self.T = r.T + self.lam
            return Decision("continue", self.T, self.lam, r.round, "accepted", self.step)
        if budget:
            return self._stop(*budget)
        return self._rollback()

    def _rollback(self) -> Decision:
        while True:
            k = self._last_acceptable()
            if k is None:
                return self._stop(Stop.no_round_left, "no acceptable round left to roll back to")
            n = self.rollbacks.get(k, 0)
            if n >= self.cfg.max_rollbacks:
                self.unacceptable.add(k)
                continue
            self.rollbacks[k] = n + 1
            self.current = k
            if self.size_mode:
                self.step = self.step / 2 ** (n + 1)
                if self.step < self.cfg.min_step:
                    return self._stop(Stop.step_underflow, f"size step fell below {self.cfg.min_step:g}")
                return Decision("rollback", self.T, self.lam, k, f"roll back to round {k} (rollback {n + 1})",
                                self.step)
            self.lam = self.lam / 2 ** (n + 1)
            if self.lam < self.cfg.min_lam:
                return self._stop(Stop.step_underflow, f"step λ fell below {self.cfg.min_lam:g}")
            t_k = next(x["T"] for x in self.rounds if x["round"] == k)
            self.T = t_k + self.lam
            return Decision("rollback", self.T, self.lam, k, f"roll back to round {k} (rollback {n + 1})")

    def _last_acceptable(self) -> int | None:
        for x in reversed(self.rounds):
            if x["accepted"] and x["round"] not in self.unacceptable:
                return x["round"]
        return None

    def _converged(self) -> bool:
        acc = [x for x in self.rounds if x["accepted"]]
        p = self.cfg.patience
        if len(acc) <= p:
            return False
        window = [x["size"] for x in acc[-(p + 1):]]
        return (max(window) - min(window)) / max(window[0], 1e-12) < self.cfg.converge_tol

    def _budget_spent(self) -> tuple[Stop, str] | None:
        if sum(1 for x in self.rounds if x["round"] > 0) >= self.cfg.max_rounds:  # round 0 is the dense model
            return Stop.round_budget, f"round budget spent ({self.cfg.max_rounds})"
        if self.cfg.time_limit_s is not None and self.elapsed_s >= self.cfg.time_limit_s:
            return Stop.time_budget, f"time budget spent ({self.cfg.time_limit_s:.0f} s)"
        return None

    def _stop(self, stop: Stop, reason: str) -> Decision:
        self.stop, self.stopped = stop, reason
        return Decision("stop", self.T, self.lam, self.current, reason, self.step)

    def end(self, stop: Stop, reason: str) -> None:
        """Stop for a reason found outside the controller (the loop's epoch budget, nothing left to prune)."""
        self.stop, self.stopped = stop, reason

    def resume(self) -> None:
        """A resumed search: a budget stop is lifted (the new budget decides)."""
        if self.stop is not None and self.stop.resumable:
            self.stop = self.stopped = None

    # ---------------------------------------------------------------- result
    def best_round(self) -> int | None:
        """The round to deliver: for accuracy, the smallest accepted model; otherwise the most accurate accepted
        round that meets the target (ties → smaller model). None if no round qualifies."""
        rounds = [x for x in self.rounds if x["round"] not in self.unacceptable or self.cfg.kind != TargetKind.accuracy]
        if self.cfg.kind == TargetKind.accuracy:
            ok = [x for x in rounds if x["accepted"]]
            return min(ok, key=lambda x: (x["size"], -x["round"]))["round"] if ok else None
        ok = [x for x in rounds if x["accepted"] and self.meets_target(x)]
        if not ok:
            return None
        return max(ok, key=lambda x: ((x["accuracy"] if x["accuracy"] is not None else 0.0), -x["size"]))["round"]

    # ---------------------------------------------------------------- persistence
    def state(self) -> dict:
        return {"controller": type(self).__name__, "cfg": asdict(self.cfg), "T": self.T, "lam": self.lam,
                "step": self.step, "rounds": self.rounds,
                "rollbacks": {str(k): v for k, v in self.rollbacks.items()}, "unacceptable": sorted(self.unacceptable),
                "elapsed_s": self.elapsed_s, "stopped": self.stopped,
                "stop": self.stop.value if self.stop else None, "current": self.current}

    @classmethod
    def from_state(cls, s: dict) -> Controller:
        cls = CONTROLLERS.get(s.get("controller", "Controller"), cls)
        c = cls(PolicyConfig(**s["cfg"]), T=s["T"], lam=s["lam"], step=s.get("step", 0.0), rounds=list(s["rounds"]),
                rollbacks={int(k): v for k, v in s["rollbacks"].items()}, unacceptable=set(s["unacceptable"]),
                elapsed_s=s["elapsed_s"], stopped=s["stopped"], current=s["current"],
                stop=Stop(s["stop"]) if s.get("stop") else _legacy_stop(s["stopped"]))
        return c


@dataclass
class FixedRateController(Controller):
    """The fixed-rate baselines (paper Table 4: IAP / ILP): every round removes the same share of the channels
    left, always going on from the newest round, with no rollback. Budget targets stop at the first round
    that meets them (that round is delivered); accuracy targets stop at the first round that loses too much
    (the last one within the target is delivered). Same interface as :class:`Controller`."""

    def acceptable(self, r: RoundResult) -> bool:
        return super().acceptable(r) if self.cfg.kind == TargetKind.accuracy else True

    def observe(self, r: RoundResult) -> Decision:
        ok = self.acceptable(r)
        self.rounds.append({**asdict(r), "accepted": ok, "lam": self.lam})
        self.elapsed_s += r.seconds
        self.current = r.round
        if self.cfg.kind == TargetKind.accuracy and not ok:
            return self._stop(Stop.accuracy_exceeded, "accuracy loss exceeded the target")
        if self.cfg.kind != TargetKind.accuracy and self.meets_target(self.rounds[-1]):
            return self._stop(Stop.target_met, "target met")
        budget = self._budget_spent()
        if budget:
            return self._stop(*budget)
        return Decision("continue", self.T, self.lam, r.round, "fixed rate")


CONTROLLERS = {"Controller": Controller, "FixedRateController": FixedRateController}


def _legacy_stop(stopped: str | None) -> Stop | None:
    """A state file written before stops were typed held only the words: its budget stops, so a resume lifts
    them as before."""
    for stop in (Stop.round_budget, Stop.time_budget):
        if stopped and stopped.startswith(stop.value):
            return stop
    return None
