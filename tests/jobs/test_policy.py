"""The adaptive controller on scripted rounds: acceptance, rollback, λ halving, marking unacceptable,
convergence, budgets, delivery choice, persistence. No training involved."""
from __future__ import annotations

import pytest

from prunekit.jobs.search.policy import Controller, PolicyConfig, RoundResult


def feed(ctrl, rnd, size, reduction, acc, seconds=1.0):
    return ctrl.observe(RoundResult(rnd, ctrl.T, size, reduction, acc, seconds))


def dense(ctrl, acc=90.0):
    return feed(ctrl, 0, 100.0, 0.0, acc)


def test_accepted_rounds_step_T_by_lambda():
    c = Controller(PolicyConfig("accuracy", 1.0, dense_accuracy=90.0, lam=0.01, step_mode="threshold"))
    d = dense(c)
    assert d.action == "continue" and d.T == pytest.approx(0.01)
    d = feed(c, 1, 90, 0.1, 89.5)
    assert d.action == "continue" and d.T == pytest.approx(0.02) and d.restore_round == 1


def test_rollback_halves_lambda_by_2_pow_n_plus_1_and_marks_unacceptable():
    c = Controller(PolicyConfig("accuracy", 1.0, dense_accuracy=90.0, lam=0.08, max_rollbacks=2, step_mode="threshold"))
    dense(c)
    feed(c, 1, 90, 0.1, 89.5)  # accepted at T=0.08 -> T=0.16
    d = feed(c, 2, 80, 0.2, 85.0)  # loss 5 > 1: roll back to 1, N=0 -> λ/2
    assert (d.action, d.restore_round) == ("rollback", 1)
    assert d.lam == pytest.approx(0.04) and d.T == pytest.approx(0.08 + 0.04)
    d = feed(c, 3, 85, 0.15, 88.0)  # loss 2: roll back to 1 again, N=1 -> λ/4
    assert d.lam == pytest.approx(0.01) and d.T == pytest.approx(0.09)
    d = feed(c, 4, 88, 0.12, 88.5)  # loss 1.5: round 1 used twice -> marked, back to round 0 (N=0 -> /2)
    assert (d.action, d.restore_round) == ("rollback", 0)
    assert 1 in c.unacceptable and d.lam == pytest.approx(0.005) and d.T == pytest.approx(0.005)


def test_params_policy_walks_up_to_target_and_delivers_a_round_that_meets_it():
    c = Controller(PolicyConfig("params", 0.5, lam=0.1, slack=0.02, step_mode="threshold"))
    dense(c)
    feed(c, 1, 70, 0.30, 89.0)
    d = feed(c, 2, 40, 0.60, 85.0)  # overshoot beyond target + slack -> rollback to 1
    assert d.action == "rollback" and d.restore_round == 1
    feed(c, 3, 49, 0.51, 88.0)  # within [target, target+slack]: accepted
    assert c.rounds[-1]["accepted"]
    assert c.best_round() == 3
    # a round that does not meet the target is never delivered, however accurate
    assert not c.meets_target(c.rounds[1])


def test_best_round_is_none_when_no_round_meets_the_target():
    c = Controller(PolicyConfig("macs", 0.5, lam=0.01, max_rounds=2, step_mode="threshold"))
    dense(c)
    feed(c, 1, 90, 0.1, 89.0)
    d = feed(c, 2, 85, 0.15, 88.0)
    assert d.action == "stop" and "round budget" in d.reason
    assert c.best_round() is None


def test_convergence_stops_the_search():
    c = Controller(PolicyConfig("accuracy", 1.0, dense_accuracy=90.0, lam=0.01, patience=3, step_mode="threshold"))
    dense(c)
    feed(c, 1, 50.0, 0.5, 89.9)
    feed(c, 2, 50.01, 0.5, 89.9)
    feed(c, 3, 50.02, 0.5, 89.9)
    d = feed(c, 4, 50.02, 0.5, 89.9)
    assert d.action == "stop" and d.reason.startswith("converged")
    assert c.best_round() == 1  # smallest accepted model (ties -> latest)... size 50.0 is round 1


def test_time_budget_and_lambda_underflow():
    c = Controller(PolicyConfig("accuracy", 1.0, dense_accuracy=90.0, lam=0.01, time_limit_s=2.5,
                                step_mode="threshold"))
    feed(c, 0, 100, 0, 90.0, seconds=1)
    feed(c, 1, 90, 0.1, 90.0, seconds=1)
    d = feed(c, 2, 80, 0.2, 89.8, seconds=1)
    assert d.action == "stop" and "time budget" in d.reason
    c = Controller(PolicyConfig("accuracy", 1.0, dense_accuracy=90.0, lam=1e-5, min_lam=1e-6, max_rollbacks=10,
                                step_mode="threshold"))
    dense(c)
    actions = [feed(c, i, 90, 0.1, 80.0).action for i in range(1, 6)]
    # λ 1e-5 → 5e-6 → 1.25e-6 (both rollbacks to round 0), then 1.25e-6 / 8 < 1e-6: stop, and stay stopped
    assert actions[:2] == ["rollback", "rollback"] and actions[2] == "stop"
    assert c.stopped and "λ fell below" in c.stopped


def test_no_acceptable_round_left():
    c = Controller(PolicyConfig("accuracy", 1.0, dense_accuracy=90.0, lam=0.01, max_rollbacks=1, step_mode="threshold"))
    dense(c)
    feed(c, 1, 90, 0.1, 80.0)  # rollback to 0
    d = feed(c, 2, 90, 0.1, 80.0)  # round 0 used once -> marked -> nothing left
    assert d.action == "stop" and "no acceptable round" in d.reason


def test_state_round_trip():
    c = Controller(PolicyConfig("params", 0.5, lam=0.1, step_mode="threshold"))
    dense(c)
    feed(c, 1, 40, 0.6, 80.0)
    c2 = Controller.from_state(c.state())
    assert c2.state() == c.state()
    assert feed(c2, 2, 60, 0.4, 85.0).T == feed(c, 2, 60, 0.4, 85.0).T


# ------------------------------------------------------------------------------------ size-space stepping
def test_size_mode_keeps_its_step_and_stops_when_the_target_is_met():
    c = Controller(PolicyConfig("macs", 0.5, max_step=0.1, slack=0.02))
    d = dense(c)
    assert d.action == "continue" and d.step == pytest.approx(0.1)
    d = feed(c, 1, 90, 0.10, 88.0)
    assert d.action == "continue" and d.step == pytest.approx(0.1)
    d = feed(c, 2, 50, 0.505, 86.0)  # accepted and meets the target: pruning further only costs accuracy
    assert d.action == "stop" and d.reason == "target met" and c.best_round() == 2


def test_size_mode_rollback_halves_the_step_and_underflow_stops():
    c = Controller(PolicyConfig("accuracy", 1.0, dense_accuracy=90.0, max_step=0.1, min_step=0.01))
    dense(c)
    feed(c, 1, 90, 0.1, 89.5)
    d = feed(c, 2, 81, 0.19, 85.0)  # too much accuracy lost: back to 1 with half the step
    assert (d.action, d.restore_round) == ("rollback", 1) and d.step == pytest.approx(0.05)
    d = feed(c, 3, 85, 0.15, 88.0)  # again: N=1 → step / 4
    assert d.step == pytest.approx(0.0125)
    d = feed(c, 4, 88, 0.12, 88.5)
    assert d.action == "stop" and "size step fell below" in d.reason


def test_an_overshooting_round_is_never_delivered():
    """Beyond target + slack a round is rejected, and best_round never picks a rejected round."""
    c = Controller(PolicyConfig("params", 0.5, lam=0.1, slack=0.02, max_rounds=2, step_mode="threshold"))
    dense(c)
    feed(c, 1, 70, 0.30, 89.0)
    d = feed(c, 2, 40, 0.60, 88.0)  # meets the target but overshoots the margin, and the budget is spent
    assert d.action == "stop" and not c.rounds[-1]["accepted"]
    assert c.best_round() is None  # the search then tops up from an accepted round


def test_size_mode_state_round_trip():
    c = Controller(PolicyConfig("accuracy", 1.0, dense_accuracy=90.0, max_step=0.2))
    dense(c)
    feed(c, 1, 80, 0.2, 85.0)
    c2 = Controller.from_state(c.state())
    assert c2.step == c.step == pytest.approx(0.1) and c2.state() == c.state()


def test_stops_are_typed_and_budget_stops_lift_on_resume():
    from prunekit.jobs.search.policy import Controller, PolicyConfig, RoundResult, Stop

    ctrl = Controller(PolicyConfig(kind="params", target=0.5, max_rounds=1))
    ctrl.observe(RoundResult(round=0, T=0.0, reduction=0.0, size=100.0, accuracy=90.0, seconds=1.0))
    d = ctrl.observe(RoundResult(round=1, T=0.1, reduction=0.1, size=90.0, accuracy=89.0, seconds=1.0))
    assert d.action == "stop" and ctrl.stop is Stop.round_budget and ctrl.stop.resumable
    again = Controller.from_state(ctrl.state())
    assert again.stop is Stop.round_budget and again.stopped == ctrl.stopped
    again.resume()
    assert again.stop is None and again.stopped is None
    legacy = ctrl.state()
    del legacy["stop"]  # a state file from before the enum: its words still say which budget stopped it
    assert Controller.from_state(legacy).stop is Stop.round_budget
    ctrl.end(Stop.nothing_left, "nothing left to prune")
    ctrl.resume()
    assert ctrl.stop is Stop.nothing_left  # not a budget: a resume does not lift it
