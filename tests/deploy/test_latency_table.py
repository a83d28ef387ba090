"""Per-layer latency table: cached per machine, predicts the pruned model's layer shapes exactly, and drives
latency-weighted thresholds and one-shot latency targets. CUDA parts skip without a GPU."""
from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

import prunekit
from prunekit.cli import main
from prunekit.core.graph import find_groups
from prunekit.core.trace import build_graph
from prunekit.core.metrics import layer_shapes
from prunekit.deploy.latency_table import LatencyTable
from prunekit.core.costmodel import CostModel, reduction
from prunekit.core.planning import layer_thresholds, plan_for_target
from prunekit.models import resolve_model
from prunekit.core.scoring import score_groups
from prunekit.core.surgery import apply_plan

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def r20_cost(tmp_path_factory):
    model, spec = resolve_model("resnet20")
    groups = find_groups(model, build_graph(model, spec.input_size), spec.classifier)
    table = LatencyTable(path=str(tmp_path_factory.mktemp("lut") / "table.json"), budget_ms=5)
    cost = CostModel.build(model, groups, spec.input_size).attach_latency(model, spec.input_size, table)
    return model, spec, groups, cost, table


def test_table_is_cached_on_disk(r20_cost):
    model, spec, _, _, table = r20_cost
    shapes = layer_shapes(model, spec.input_size)
    assert len({s.key() for s in shapes.values()}) == table.measured  # each distinct shape timed once
    again = LatencyTable(path=table.path)
    assert again.total(shapes.values()) == table.total(shapes.values()) and again.measured == 0
    assert all(v > 0 for v in json.load(open(table.path))["entries"].values())


@pytest.mark.parametrize("round_to", [1, 16])
def test_prediction_uses_the_pruned_models_exact_shapes(r20_cost, round_to):
    model, spec, groups, cost, table = r20_cost
    scores = score_groups(model, groups, "l1")
    plan, _ = plan_for_target(scores, cost, "latency", 0.2, round_to=round_to)
    pruned, _ = apply_plan(model, groups, plan, spec.input_size)
    real = table.total(layer_shapes(pruned, spec.input_size).values())
    assert cost.predict_latency(plan) == pytest.approx(real, rel=1e-12)
    assert reduction(cost, plan, "latency") >= 0.2


def test_latency_weighted_thresholds(r20_cost):
    _, _, groups, cost, _ = r20_cost
    roots = [g.root for g in groups if g.prunable]
    th = layer_thresholds(cost, roots, 1.0, "latency")
    assert set(th) == set(roots) and sum(th.values()) == pytest.approx(len(roots))
    assert th != layer_thresholds(cost, roots, 1.0, "params")


def test_latency_target_already_met_is_a_clear_error(tmp_path):
    from prunekit.errors import PrunekitError

    with pytest.raises(PrunekitError, match="already runs in"):
        prunekit.prune(prunekit.PruneConfig(model="resnet20", data="random", target="latency=1000",
                                            out=str(tmp_path / "run"), schedule="oneshot", calib_images=8,
                                            speed_batches=()))
    assert not (tmp_path / "run").exists()


def test_latency_cost_with_a_flops_target(tmp_path):
    run = prunekit.prune(prunekit.PruneConfig(model="resnet20", data="random", target="flops=0.3", cost="latency",
                                              out=str(tmp_path / "run"), schedule="oneshot", calib_images=8,
                                              speed_batches=()))
    assert run["cost"] == "latency" and run["reduction"]["macs"] >= 0.3 and run["target"]["met"]


def test_oneshot_latency_target_replans_until_the_measurement_fits(tmp_path, monkeypatch):
    """One-shot latency= plans on the table's prediction, then *measures*; a miss asks for more. The runtime
    is faked here (deterministic, so the loop is tested, not the machine's noise): the dense model takes MACs / 1e7
    ms, a pruned one 20 % more than its MACs say (a layout the runtime handles worse than the table predicts), so
    the first plan, made to just meet the goal on the table, measures over it."""
    import prunekit.deploy.speed as speed
    from prunekit.core.metrics import count_model

    dense_macs = 40_551_040

    def fake(model, size, *a, **k):
        macs = count_model(model, size).macs
        return macs / 1e7 * (1.0 if macs == dense_macs else 1.2)

    monkeypatch.setattr(speed, "model_latency_ms", fake)
    run = prunekit.prune(prunekit.PruneConfig(model="resnet20", data="random", target="latency=3.0",
                                              out=str(tmp_path / "run"), schedule="oneshot", calib_images=8,
                                              speed_batches=()))
    lat, tries = run["latency"], run["latency"]["tries"]
    assert run["cost"] == "latency" and lat["dense_ms"] == pytest.approx(dense_macs / 1e7)
    assert len(tries) >= 2 and not tries[0]["met"] and tries[0]["measured_ms"] > 3.0, tries  # it missed, then
    assert any(t["met"] for t in tries[1:]) and all(t["predicted_ms"] > 0 for t in tries)  # asked for more
    assert run["target"]["met"] and lat["measured_ms"] <= 3.0 and run["target"]["reached"] == lat["measured_ms"]


def test_the_fixed_part_of_a_models_time_is_fitted():
    from prunekit.deploy.latency_table import fixed_and_scaled

    assert fixed_and_scaled([(10.0, 12.0), (6.0, 9.6)]) == pytest.approx((6.0, 0.6))
    assert fixed_and_scaled([(10.0, 12.0), (6.0, 9.6), (3.0, 7.8)]) == pytest.approx((6.0, 0.6))
    assert fixed_and_scaled([(10.0, 12.0)]) == pytest.approx((0.0, 1.2))  # one point: proportional
    assert fixed_and_scaled([(10.0, 12.0), (6.0, 12.5)]) == pytest.approx((0.0, 1.2))  # no slope: proportional


def _fake_runtime(monkeypatch, fixed_ms: float):
    """Whole-model time = a fixed part that pruning cannot shrink + MACs / 1e7 ms (deterministic)."""
    import prunekit.deploy.speed as speed
    from prunekit.core.metrics import count_model

    monkeypatch.setattr(speed, "model_latency_ms",
                        lambda model, size, *a, **k: fixed_ms + count_model(model, size).macs / 1e7)


def test_a_fixed_cost_is_learnt_from_the_first_measurement(tmp_path, monkeypatch):
    """2 ms that do not scale with channels: the proportional prediction misses, the fitted one reaches the
    goal on the next plan instead of creeping towards it."""
    _fake_runtime(monkeypatch, 2.0)
    run = prunekit.prune(prunekit.PruneConfig(model="resnet20", data="random", target="latency=4.5",
                                              out=str(tmp_path / "run"), schedule="oneshot", calib_images=8,
                                              speed_batches=()))
    lat = run["latency"]
    first_met = next(i for i, t in enumerate(lat["tries"]) if t["met"])
    assert run["target"]["met"] and lat["measured_ms"] <= 4.5 and first_met <= 2, lat["tries"]
    # later tries only bisect towards the goal: the delivered plan is the least-pruned one that meets it
    met = [t for t in lat["tries"] if t["met"]]
    assert lat["measured_ms"] == max(t["measured_ms"] for t in met)


def test_a_target_under_the_fixed_cost_is_refused_with_the_cap(tmp_path, monkeypatch):
    _fake_runtime(monkeypatch, 5.0)  # dense ≈ 9.06 ms, of which 5 never shrink: 4.5 ms cannot be reached
    with pytest.raises(prunekit.PrunekitError, match=r"latency=4.5 is out of reach.*closest plan measured .*"
                                                     r"does not shrink with channels, which caps pruning near") as e:
        prunekit.prune(prunekit.PruneConfig(model="resnet20", data="random", target="latency=4.5",
                                            out=str(tmp_path / "run"), schedule="oneshot", calib_images=8,
                                            speed_batches=()))
    best, fixed = re.search(r"measured ([\d.]+)×.*about ([\d.]+) ms", str(e.value)).groups()
    assert float(best) < 9.06 / 4.5 and 3.5 <= float(fixed) <= 6.0, str(e.value)  # the table is not MACs: about
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,match", [
    (["--round-to", "0"], "--round-to must be auto or a positive integer"),
    (["--round-to", "-8"], "--round-to must be auto or a positive integer"),
    (["--round-to", "x"], "--round-to must be auto or a positive integer"),
    (["--runtime", "tpu"], "Invalid value for '--runtime'"),
    (["--cost", "watts"], "Invalid value for '--cost'"),
    (["--speed-batches", "0"], "--speed-batches must be positive"),
])
def test_alignment_options_are_checked(tmp_path, args, match):
    r = CliRunner().invoke(main, ["prune", "resnet20", "--data", "random", "--target", "flops=0.3", "--schedule",
                                  "oneshot", "--out", str(tmp_path / "run"), *args])
    assert r.exit_code == 2 and r.output.startswith("error:") and match in r.output, r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without a GPU")
def test_bench_device_cuda_without_a_gpu(tmp_path):
    r = CliRunner().invoke(main, ["bench", str(tmp_path), "--device", "cuda"])
    assert r.exit_code == 2 and r.output.startswith("error:") and "no CUDA GPU" in r.output


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_bench_device_cuda(tmp_path):
    out = tmp_path / "run"
    prunekit.prune(prunekit.PruneConfig(model="resnet20", data="random", target="flops=0.5", out=str(out),
                                        schedule="oneshot", calib_images=8, runtime="cuda"))
    r = CliRunner().invoke(main, ["bench", str(out), "--device", "cuda", "--runs", "5", "--warmup", "2",
                                  "--batch-sizes", "1", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["batches"][0]["pytorch_cuda"]
    assert {(c["dtype"], c["layout"]) for c in rows} == {("fp32", "contiguous"), ("fp32", "channels_last"),
                                                         ("bf16", "contiguous"), ("bf16", "channels_last")}
    assert all(c["dense_ms"] > 0 and c["pruned_ms"] > 0 for c in rows)
