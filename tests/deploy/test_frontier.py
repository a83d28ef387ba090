"""The deployment frontier: the fastest dense deployment is the fastest dense row of the loop, and each pruned row
gets its speedup over its own runtime's dense model and over that fastest dense row (faked timings); bench
times every available runtime and refuses runtimes it cannot serve."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from prunekit.cli import main
from prunekit.deploy.export import export_onnx
from prunekit.deploy.frontier import fastest_dense, frontier_rows, key
from prunekit.models import resolve_model
from prunekit.runtimes import Measured, summarize

HAS_OPENVINO = __import__("importlib").util.find_spec("openvino") is not None


def measured(ms: dict[str, float], jitter: float = 0.0) -> Measured:
    """Faked interleaved timings: 20 rounds of each key at its ms (× 1 + jitter on odd rounds)."""
    times = {k: [v / 1000 * (1 + jitter * (i % 2)) for i in range(20)] for k, v in ms.items()}
    return Measured({k: summarize(t, 32) for k, t in times.items()}, times, {k: "fp32" for k in ms})


def test_the_fastest_dense_deployment_is_the_minimum_over_the_dense_rows():
    m = measured({key("ort", "dense"): 30.0, key("ort", "pruned"): 20.0, key("ov", "dense"): 6.0,
                  key("ov", "pruned"): 5.0, key("ort8", "dense"): 17.0, key("ort8", "pruned"): 4.0})
    assert fastest_dense(m) == key("ov", "dense")  # not the pruned 4 ms row: it is not a dense deployment
    rows, fastest = frontier_rows(m, {key("ov", "pruned"): 85.5})
    assert fastest == {"runtime": "ov", "precision": "fp32", "p50_ms": pytest.approx(6.0)}
    by = {(r["runtime"], r["model"]): r for r in rows}
    assert by["ort", "pruned"]["speedup"] == pytest.approx(1.5) and by["ov", "pruned"]["speedup"] == pytest.approx(1.2)
    assert by["ov", "pruned"]["over_fastest_dense"] == pytest.approx(1.2)
    assert by["ort", "pruned"]["over_fastest_dense"] == pytest.approx(0.3)  # faster than its dense, slower than OV
    assert by["ort8", "pruned"]["over_fastest_dense"] == pytest.approx(1.5)
    assert by["ov", "dense"]["over_fastest_dense"] == pytest.approx(1.0) and "speedup" not in by["ov", "dense"]
    assert by["ov", "pruned"]["accuracy"] == 85.5 and "accuracy" not in by["ort", "pruned"]


def test_no_dense_row_no_baseline():
    rows, fastest = frontier_rows(measured({key("ort", "pruned"): 2.0}))
    assert fastest is None and "over_fastest_dense" not in rows[0]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("frontier")
    for name, arch in (("dense", "resnet20"), ("pruned", "resnet20")):
        model, spec = resolve_model(arch)
        if name == "pruned":  # a narrower stand-in with the same input: half the first conv's filters
            model.conv1 = torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        export_onnx(model, torch.randn(2, *spec.input_size), str(d / f"{name}.onnx"), exporter="torchscript")
    return d


def test_bench_times_every_available_runtime(pair):
    r = CliRunner().invoke(main, ["bench", str(pair / "pruned.onnx"), "--vs", str(pair / "dense.onnx"), "--runs", "3",
                                  "--warmup", "1", "--batch-sizes", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    expected = {"onnxruntime-cpu"} | ({"openvino-cpu"} if HAS_OPENVINO else set())
    assert set(out["runtimes"]) == expected and "onnxruntime-cpu-int8" in out["skipped"]  # no int8 files here
    row = out["batches"][0]
    assert {(f["runtime"], f["model"]) for f in row["frontier"]} == {(r, m) for r in expected
                                                                     for m in ("dense", "pruned")}
    assert row["fastest_dense"]["runtime"] in expected
    best = min(f["p50_ms"] for f in row["frontier"] if f["model"] == "dense")
    assert row["fastest_dense"]["p50_ms"] == best


def test_bench_refuses_an_int8_runtime_without_int8_files(pair):
    r = CliRunner().invoke(main, ["bench", str(pair / "pruned.onnx"), "--vs", str(pair / "dense.onnx"),
                                  "--runtimes", "onnxruntime-cpu-int8", "--runs", "2"])
    assert r.exit_code == 2 and r.output.startswith("error:") and "INT8 files" in r.output, r.output
    r = CliRunner().invoke(main, ["bench", str(pair / "pruned.onnx"), "--runtimes", "onnxruntime-cpu,tpu"])
    assert r.exit_code == 2 and "tpu is not one of" in r.output, r.output
