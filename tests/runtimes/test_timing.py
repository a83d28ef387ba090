"""Timing statistics on a fake clock (never wall-clock speed): percentiles, warm-up, interleaving, the minimum a
latency table stores, and the paired speedup with its spread."""
from __future__ import annotations

import numpy as np
import pytest

from prunekit.runtimes.timing import interleaved, paired_speedup, summarize, time_budgeted, time_calls


def test_summary_statistics_on_known_timings():
    st = summarize([0.001 * i for i in range(1, 101)], batch=4)  # 1 … 100 ms
    assert st.runs == 100 and st.min_ms == pytest.approx(1) and st.max_ms == pytest.approx(100)
    assert st.p50_ms == pytest.approx(50.5) and st.p90_ms == pytest.approx(90.1) and st.p99_ms == pytest.approx(99.01)
    assert st.mean_ms == pytest.approx(50.5) and st.throughput == pytest.approx(4 / 0.0505)


def test_time_calls_uses_the_clock_and_skips_warmup():
    ticks = iter(range(0, 1000, 2))  # each call to the clock advances 2 s
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=3, runs=5, clock=lambda: next(ticks))
    assert len(calls) == 8 and times == [2] * 5


def test_interleaved_calls_alternate_and_skip_warmup():
    order, now = [], [0.0]

    def clock():
        return now[0]

    def call(tag, cost):
        def fn():
            order.append(tag)
            now[0] += cost
        return fn
    times = interleaved({"a": call("a", 1.0), "b": call("b", 3.0)}, warmup=2, runs=3, clock=clock)
    assert order == ["a", "b"] * 5 and times == {"a": [1.0] * 3, "b": [3.0] * 3}


def test_a_layer_entry_is_the_fastest_call():
    costs = iter([9, 9, 5, 3, 4, 7, 6, 8, 30])  # two warm-up calls, then at least five timed ones
    now = [0.0]

    def fn():
        now[0] += next(costs) / 1000
    assert time_budgeted(fn, budget_ms=0, least=5, clock=lambda: now[0]) == pytest.approx(3.0)


def test_the_speedup_is_robust_to_load():
    rng = np.random.default_rng(1)
    load = np.where(rng.random(60) < 0.3, 3.0, 1.0)  # a third of the rounds run on a loaded machine
    dense, pruned = 10.0 * load, 5.0 * load  # the burst slows both models of a round alike
    sp = paired_speedup(list(dense), list(pruned))
    assert sp.value == pytest.approx(2.0) and sp.low == pytest.approx(2.0) and sp.high == pytest.approx(2.0)
    # load that hits the pruned model's calls more often (it runs second in each round): the medians are fooled,
    # the fast tails are not
    hit = rng.random(60) < 0.6
    dense, pruned = 10.0 * np.where(rng.random(60) < 0.2, 2.0, 1.0), 5.0 * np.where(hit, 2.0, 1.0)
    assert np.median(dense) / np.median(pruned) < 1.5
    assert paired_speedup(list(dense), list(pruned)).value == pytest.approx(2.0)


def test_the_spread_grows_with_the_noise():
    rng = np.random.default_rng(0)
    quiet = paired_speedup(list(10 * (1 + 0.01 * rng.standard_normal(50))), list(5 * np.ones(50)))
    noisy = paired_speedup(list(10 * (1 + 0.2 * rng.standard_normal(50))), list(5 * np.ones(50)))
    assert quiet.low <= quiet.value <= quiet.high and noisy.low <= noisy.value <= noisy.high
    assert noisy.spread > 5 * quiet.spread and quiet.value == pytest.approx(2.0, rel=0.02)
    assert paired_speedup([2.0], [1.0]).to_dict() == {"speedup": 2.0, "low": 2.0, "high": 2.0, "spread": 0.0,
                                                      "pairs": 1}
