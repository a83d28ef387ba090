"""OpenVINO as a runtime (issue 24): it runs prunekit's ONNX files as onnxruntime does, says which precision it
ran, measures its channel grid, builds latency tables without torch, and plans a speedup target that a faked
slow first measurement makes it plan again; planning does not follow measurement noise. Skips without the
``openvino`` extra (the grid rule and the noise rule run everywhere)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import prunekit
from prunekit.deploy.export import export_onnx
from prunekit.models import resolve_model
from tests.fresh import run_without
from prunekit.runtimes import get_runtime
from prunekit.runtimes.openvino_cpu import grid_from_times

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="needs the openvino extra (pip install 'prunekit[openvino]')")


def staircase(block: int, widths=range(8, 65)) -> dict[int, float]:
    """A conv that pays for whole blocks of ``block`` channels, plus a little per real channel."""
    return {w: 1.0 * -(-w // block) + 0.001 * w for w in widths}


@pytest.mark.parametrize("block", [32, 16, 8, 4])
def test_the_grid_is_read_from_a_staircase(block):
    assert grid_from_times(staircase(block)) == block


def test_no_staircase_no_grid():
    assert grid_from_times({w: 0.1 * w for w in range(8, 65)}) == 1
    noisy = {w: v * (1 + 0.03 * np.sin(w)) for w, v in staircase(16).items()}
    assert grid_from_times(noisy) == 16  # a few percent of noise does not hide the steps


@pytest.fixture(scope="module")
def r20_onnx(tmp_path_factory):
    model, spec = resolve_model("resnet20")
    path = tmp_path_factory.mktemp("ov") / "r20.onnx"
    export_onnx(model, torch.randn(2, *spec.input_size), str(path), exporter="torchscript")
    return model, str(path)


@needs_openvino
def test_openvino_runs_the_onnx_file_and_says_what_precision_ran(r20_onnx):
    model, path = r20_onnx
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    f32 = get_runtime("openvino-cpu-f32").load(path, 1, x.shape)
    assert f32.precision == "f32"
    assert np.allclose(np.asarray(next(iter(f32(x).values()))), ref, atol=1e-3, rtol=1e-3)
    auto = get_runtime("openvino-cpu").load(path, 1, x.shape)
    assert auto.precision in ("bf16", "f32", "f16")
    measured = get_runtime("openvino-cpu").measure({"a": path, "b": path}, (3, 32, 32), 2, runs=3, warmup=1)
    assert set(measured.stats) == {"a", "b"} and measured.stats["a"].runs == 3


@needs_openvino
def test_an_openvino_latency_table_is_built_without_torch(r20_onnx, tmp_path, monkeypatch):
    from prunekit.runtimes import openvino_cpu
    from prunekit.runtimes.base import Grid

    out = tmp_path / "ov.json"
    # the grid measured on this machine is cached per fingerprint; a fixed one keeps the subprocess quick
    fake_grid = ("from prunekit.runtimes import openvino_cpu, Grid\n"
                 "openvino_cpu.OpenVINOCPU.grid = lambda self, threads=1: Grid(32, 'fake grid for the test')")
    imported = run_without(["latency-table", r20_onnx[1], "--out", str(out), "--runtime", "openvino-cpu",
                            "--budget-ms", "0.5", "-q"], ("torch",), prelude=fake_grid)
    assert imported == {"torch": False}
    from prunekit.deploy.latency_table import LatencyTable, read_table

    doc = read_table(str(out))
    assert doc["runtime"] == doc["timed_on"] == "openvino-cpu" and doc["round_to"] == 32
    assert doc["device"]["grid"] == {"multiple": 32, "detected": "fake grid for the test"}
    table = LatencyTable.from_file(str(out))
    assert table.runtime == "openvino-cpu" and table.grid == (32, "fake grid for the test")
    monkeypatch.setattr(openvino_cpu.OpenVINOCPU, "grid", lambda self, threads=1: Grid(32, "unused"))
    with pytest.raises(prunekit.PrunekitError, match="holds openvino-cpu timings: use it with --runtime"):
        from prunekit.deploy.latency_table import table_for

        table_for("onnxruntime-cpu", 1, str(out))


def _fake_speed(monkeypatch, first_factor: float, noise: float = 0.0, seed: int = 0):
    """compare_speed faked: the 'true' speedup is the MAC ratio, the first measurement sees ``first_factor`` of
    it, every measurement carries ± ``noise`` and reports an interval of ± 2·noise around what it saw."""
    import prunekit.deploy.speed as speed
    from prunekit.core.metrics import count_model

    rng = np.random.default_rng(seed)
    calls = []

    def compare_speed(dense, pruned, size, runtime, batches, threads, **kw):
        true = count_model(dense, size).macs / count_model(pruned, size).macs
        seen = true * (first_factor if not calls else 1.0) * (1 + noise * rng.uniform(-1, 1))
        calls.append(seen)
        return {"runtime": runtime, "batches": [{"batch": batches[0], "dense_ms": 10.0, "pruned_ms": 10 / seen,
                                                 "speedup": seen, "speedup_low": seen * (1 - 2 * noise),
                                                 "speedup_high": seen * (1 + 2 * noise)}]}
    monkeypatch.setattr(speed, "compare_speed", compare_speed)
    monkeypatch.setattr(speed, "model_latency_ms", lambda *a, **k: 10.0)
    return calls


def _speedup_run(tmp_path, name, runtime="onnxruntime-cpu", **kw):
    return prunekit.prune(prunekit.PruneConfig(model="resnet20", data="random", target="speedup=1.5", out=str(
        tmp_path / name), schedule="oneshot", calib_images=8, speed_batches=(), runtime=runtime, round_to=8,
        depth="off", **kw))


@needs_openvino
def test_a_speedup_target_on_openvino_is_planned_again_after_a_slow_first_try(tmp_path, monkeypatch):
    from prunekit.runtimes import openvino_cpu
    from prunekit.runtimes.base import Grid

    monkeypatch.setattr(openvino_cpu.OpenVINOCPU, "grid", lambda self, threads=1: Grid(8, "fake grid"))
    calls = _fake_speed(monkeypatch, first_factor=0.8)
    run = _speedup_run(tmp_path, "ov", runtime="openvino-cpu")
    tries = run["latency"]["tries"]
    assert len(tries) >= 2 and len(calls) == len(tries) and tries[0]["speedup"] < 1.5 and not tries[0]["met"]
    # the delivered plan is the least-pruned one measured to meet the goal (later tries may bisect and miss)
    met = [t for t in tries if t["met"]]
    assert run["target"]["met"] and run["latency"]["speedup"] == min(t["speedup"] for t in met) >= 1.5
    assert run["latency"]["runtime"] == "openvino-cpu"
    assert run["alignment"] == {"round_to": 8, "runtime": "openvino-cpu", "detected": "set by --round-to"}


def test_plans_do_not_follow_the_noise(tmp_path, monkeypatch):
    """The same command twice under different faked noise (±4 %, an interval of ±8 %): the widths match, because a
    miss inside the measurement's spread is kept, not planned again."""
    from prunekit.deploy.latency_table import LatencyTable

    # the layer table is the machine's too: fixed here, so only the faked whole-model noise varies
    monkeypatch.setattr(LatencyTable, "_measure", lambda self, s: 1e-4 * s.in_c * s.out_c * s.h * s.w + 0.01)
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    widths = []
    for seed in (1, 2, 3):
        _fake_speed(monkeypatch, first_factor=1.0, noise=0.04, seed=seed)
        run = _speedup_run(tmp_path, f"n{seed}")
        widths.append([(r["layer"], r["out_after"]) for r in run["layers"]])
        assert len(run["latency"]["tries"]) == 1 and run["target"]["met"]
        assert "speedup_low" in run["latency"] and run["latency"]["speedup_low"] <= run["latency"]["speedup_high"]
    assert widths[0] == widths[1] == widths[2]
