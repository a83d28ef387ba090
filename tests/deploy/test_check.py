"""The CI gate: exact and tolerance checks on deterministic figures, relative latency, exit codes 0/1/2."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from prunekit.cli import main
from prunekit.deploy.export import export_onnx
from prunekit.models import resolve_model


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    small, big = d / "r20.onnx", d / "r32.onnx"
    for name, path in (("resnet20", small), ("resnet32", big)):
        export_onnx(resolve_model(name)[0], torch.randn(2, 3, 32, 32), str(path), exporter="torchscript")
    return str(small), str(big), d


def run(*args):
    return CliRunner().invoke(main, ["check", *map(str, args)])


def test_baseline_round_trip_and_growth(onnx_pair):
    small, big, d = onnx_pair
    base = d / "baseline.json"
    assert run(small, "--write-baseline", base).exit_code == 0
    data = json.loads(base.read_text())
    assert set(data) == {"params", "int8_params", "macs", "bytes"}
    assert run(small, "--baseline", base).exit_code == 0  # the same model is within its own baseline
    r = run(big, "--baseline", base, "--tolerance", "2%", "--json")
    assert r.exit_code == 1  # ResNet-32 is ~70 % bigger than ResNet-20
    out = json.loads(r.output)
    assert not out["passed"] and {c["metric"] for c in out["checks"] if not c["passed"]} == {"params", "macs",
                                                                                               "bytes"}
    # a tolerance wide enough lets it pass
    assert run(big, "--baseline", base, "--tolerance", "100%").exit_code == 0


def test_budgets_and_markdown(onnx_pair, tmp_path):
    small, _, _ = onnx_pair
    md = tmp_path / "summary.md"
    r = run(small, "--max-macs", 40e6, "--max-params", 1e6, "--markdown", md)
    assert r.exit_code == 1 and "OVER" in r.output
    text = md.read_text()
    assert "over budget" in text and "| macs | ≤ 40,000,000 | 40,551,040 | **over** |" in text
    assert run(small, "--max-macs", 41e6, "--max-bytes", 2e6).exit_code == 0


def test_relative_latency_gate(onnx_pair):
    small, big, _ = onnx_pair
    r = run(small, "--vs", big, "--min-speedup", 0.01, "--runs", 5, "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)["checks"][0]
    assert row["metric"].startswith("speedup") and row["actual"] > 0
    assert run(small, "--vs", big, "--min-speedup", 1000, "--runs", 5).exit_code == 1


@pytest.mark.parametrize("case,match", [
    ("missing", "no such ONNX file"), ("corrupt", "cannot read ONNX"), ("bad_baseline", "not valid JSON"),
    ("empty_baseline", "none of"), ("nothing", "nothing to check"), ("tolerance", "--tolerance"),
    ("vs_alone", "--vs needs"), ("speedup_alone", "--min-speedup needs --vs"),
    ("fast_path_not_onnx", "cannot read ONNX"),
])
def test_usage_errors_exit_2(onnx_pair, tmp_path, case, match):
    small, _, _ = onnx_pair
    corrupt = tmp_path / "c.onnx"
    corrupt.write_bytes(b"junk")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    args = {"missing": ["nope.onnx", "--max-macs", 1], "corrupt": [corrupt, "--max-macs", 1],
            "bad_baseline": [small, "--baseline", bad], "empty_baseline": [small, "--baseline", empty],
            "nothing": [small], "tolerance": [small, "--max-macs", 1, "--tolerance", "lots"],
            "vs_alone": [small, "--vs", small], "speedup_alone": [small, "--min-speedup", 2],
            "fast_path_not_onnx": [corrupt, "--require-fast-path"]}[case]
    r = run(*args)
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output


def _conv_stack(channels: int, path):
    import torch.nn as nn

    model = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                          nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                          nn.Conv2d(channels, channels, 3, padding=1)).eval()
    export_onnx(model, torch.randn(2, 3, 16, 16), str(path), exporter="torchscript")
    return str(path)


def test_fast_path_counts_convs_off_nchwc(tmp_path):
    """31 channels fall off onnxruntime's NCHWc kernels, 32 stay on them (x86 CPUs with MLAS NCHWc)."""
    from prunekit.deploy.fastpath import fast_path, nchwc_supported

    if not nchwc_supported():
        pytest.skip("this CPU / onnxruntime has no NCHWc kernels")
    odd, even = _conv_stack(31, tmp_path / "c31.onnx"), _conv_stack(32, tmp_path / "c32.onnx")
    fp31, fp32 = fast_path(odd), fast_path(even)
    assert (fp32.convs, fp32.nchwc_convs, fp32.batchnorm) == (3, 3, 0) and fp32.on_path
    assert fp31.convs == 3 and fp31.nchwc_convs < 3 and not fp31.on_path and fp31.off_path
    assert run(even, "--require-fast-path").exit_code == 0
    r = run(odd, "--require-fast-path", "--json")
    assert r.exit_code == 1 and json.loads(r.output)["checks"][0]["actual"] == len(fp31.off_path)
    assert run(odd, "--require-fast-path", "--vs", odd).exit_code == 0  # no worse than its reference


HAS_OPENVINO = __import__("importlib").util.find_spec("openvino") is not None


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs the openvino extra")
def test_speedup_gate_on_openvino_same_and_fastest(onnx_pair):
    small, big, _ = onnx_pair
    r = run(small, "--vs", big, "--min-speedup", 0.01, "--runs", 5, "--runtime", "openvino-cpu", "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)["checks"][0]
    assert "on openvino-cpu;" in row["detail"] and "90 % interval" in row["detail"] and row["actual"] > 0
    # against the fastest dense deployment: the reference on every runtime here, the fastest of them
    r = run(small, "--vs", big, "--min-speedup", 0.01, "--runs", 5, "--runtime", "onnxruntime-cpu", "--against",
            "fastest", "--json")
    assert r.exit_code == 0, r.output
    detail = json.loads(r.output)["checks"][0]["detail"]
    assert "vs the fastest of 2 runtimes" in detail  # onnxruntime-cpu and openvino-cpu (no int8 file beside it)
    assert run(small, "--vs", big, "--min-speedup", 1000, "--runs", 3, "--runtime", "openvino-cpu").exit_code == 1
