"""INT8 quantization: a small model quantizes, runs and agrees with fp32 within the reported bound; four-way
bench rows; the size gate reads int8 files; bad input is one line and exit 2 with nothing written."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from prunekit.cli import main
from prunekit.deploy.export import export_onnx
from prunekit.models import resolve_model
from prunekit.deploy.quantize import AGREEMENT_BOUND, quantize_onnx


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """dense and pruned ResNet-20 (one-shot, random data) as fp32 ONNX files."""
    d = tmp_path_factory.mktemp("q")
    r = run("prune", "resnet20", "--data", "random", "--target", "flops=0.5", "--schedule", "oneshot",
            "--calib-images", 16, "--speed-batches", "none", "--out", d / "run", "--quiet")
    assert r.exit_code == 0, r.output
    export_onnx(resolve_model("resnet20")[0], torch.randn(2, 3, 32, 32), str(d / "dense.onnx"), exporter="torchscript")
    assert run("export", d / "run", "--out", d / "pruned.onnx", "--exporter", "torchscript", "--quiet").exit_code == 0
    return d


def test_quantize_agrees_with_fp32_within_the_bound(pair):
    x = torch.randn(64, 3, 32, 32).numpy()
    report = quantize_onnx(str(pair / "dense.onnx"), str(pair / "dense.int8.onnx"), x, x[:16])
    bound = next(c for c in report.checks if c["check"].startswith("int8 ≈ fp32"))
    assert report.bytes < 0.4 * report.fp32_bytes  # int8 weights: about a quarter of the bytes
    assert bound["top1_agreement"] >= AGREEMENT_BOUND and bound["relative_diff"] < 0.15, bound
    assert all(c["passed"] for c in report.checks)


def test_quantize_cli_on_a_run_folder_records_it(pair):
    r = run("quantize", pair / "run", "--data", "random", "--out", pair / "pruned.int8.onnx", "--quiet")
    assert r.exit_code == 0, r.output
    assert "warning: calibrating on random inputs" in r.output and (pair / "pruned.int8.onnx").exists()
    record = json.loads((pair / "run" / "run.json").read_text())["int8"]["pruned"]
    assert record["method"] == "minmax" and record["bytes"] == os.path.getsize(pair / "pruned.int8.onnx")


def test_bench_and_check_read_int8_files(pair):
    if not (pair / "dense.int8.onnx").exists():
        x = torch.randn(32, 3, 32, 32).numpy()
        quantize_onnx(str(pair / "dense.onnx"), str(pair / "dense.int8.onnx"), x, x[:8])
    if not (pair / "pruned.int8.onnx").exists():
        x = torch.randn(32, 3, 32, 32).numpy()
        quantize_onnx(str(pair / "pruned.onnx"), str(pair / "pruned.int8.onnx"), x, x[:8])
    r = run("bench", pair / "pruned.onnx", "--vs", pair / "dense.onnx", "--int8", "--runs", 3, "--warmup", 1,
            "--batch-sizes", 1, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out["models"]) == {"dense", "pruned", "dense-int8", "pruned-int8"}
    row = out["batches"][0]
    assert set(row["onnxruntime"]) == set(out["models"]) and row["int8"]["pruned_int8_vs_dense_int8"] > 0
    # the same MACs in fp32 and int8 (the shortcut's quantized selection is still not counted)
    assert out["models"]["pruned-int8"]["macs"] == out["models"]["pruned"]["macs"]
    r = run("check", pair / "pruned.int8.onnx", "--max-bytes", 10_000_000, "--json")
    figures = json.loads(r.output)["figures"]
    assert r.exit_code == 0 and figures["int8_params"] > 0.9 * figures["params"]


@pytest.mark.parametrize("case,match", [
    ("corrupt", "cannot read ONNX"), ("quantized", "already quantized"), ("no data", "needs calibration images"),
    ("missing", "no such ONNX file or run folder"), ("bad method", "Invalid value for '--method'"),
])
def test_quantize_mistakes(pair, tmp_path, case, match):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    if case == "quantized" and not (pair / "dense.int8.onnx").exists():
        x = torch.randn(16, 3, 32, 32).numpy()
        quantize_onnx(str(pair / "dense.onnx"), str(pair / "dense.int8.onnx"), x, x[:8])
    args = {"corrupt": [junk, "--data", "random"], "quantized": [pair / "dense.int8.onnx", "--data", "random"],
            "no data": [pair / "dense.onnx"], "missing": [tmp_path / "nope"],
            "bad method": [pair / "dense.onnx", "--method", "magic"]}[case]
    out = tmp_path / "out.int8.onnx"
    r = run("quantize", *args, "--out", out)
    assert r.exit_code == 2 and r.output.startswith("error:") and match in r.output, r.output
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if "tmp" in p]


class _TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.cls, self.box = torch.nn.Conv2d(16, 5, 1), torch.nn.Conv2d(16, 4, 1)

    def forward(self, x):
        f = self.body(x)
        return {"cls": self.cls(f), "boxes": self.box(f)}


def test_quantize_checks_every_output_of_a_multi_output_model(tmp_path):
    torch.manual_seed(0)
    export_onnx(_TwoHeads().eval(), torch.randn(2, 3, 32, 32), str(tmp_path / "m.onnx"))
    x = torch.randn(32, 3, 32, 32).numpy()
    report = quantize_onnx(str(tmp_path / "m.onnx"), str(tmp_path / "m.int8.onnx"), x, x[:8])
    names = [c["check"] for c in report.checks]
    assert "int8 output (cls) at batch 8" in names and "int8 output (boxes) at batch 8" in names, names
    bounds = {c["check"]: c for c in report.checks if c["check"].startswith("int8 ≈ fp32")}
    assert set(bounds) == {"int8 ≈ fp32 (cls) (stated bound)", "int8 ≈ fp32 (boxes) (stated bound)"}
    assert all(c["passed"] for c in report.checks) and all(b["relative_diff"] < 0.2 for b in bounds.values())


class _UnfoldedBN(nn.Module):
    """A BatchNorm after a concatenation of two convs (a mixed conv's layout): export cannot fold it into a conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 5, padding=2)
        self.bn, self.out = nn.BatchNorm2d(16), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.out(torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], 1)))).mean((2, 3))


def test_a_batchnorm_export_could_not_fold_stays_float_and_openvino_compiles_the_int8_file(tmp_path):
    import subprocess
    import sys

    import onnx

    torch.manual_seed(0)
    export_onnx(_UnfoldedBN().eval(), torch.randn(2, 3, 16, 16), str(tmp_path / "m.onnx"))
    x = torch.randn(32, 3, 16, 16).numpy()
    quantize_onnx(str(tmp_path / "m.onnx"), str(tmp_path / "m.int8.onnx"), x, x[:8])
    graph = onnx.load(str(tmp_path / "m.int8.onnx")).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    bns = [n for n in graph.node if n.op_type == "BatchNormalization"]
    assert bns and all(made_by.get(i) != "DequantizeLinear" for n in bns for i in n.input[1:]), "BN params quantized"
    assert any(n.op_type == "QuantizeLinear" for n in graph.node), "the convs are still int8"
    pytest.importorskip("openvino")
    # the malformed per-channel BN scale used to crash OpenVINO's compiler (SIGSEGV): compile in a child process
    code = ("import sys, openvino as ov; c = ov.Core(); m = c.read_model(sys.argv[1]); "
            "c.compile_model(m, 'CPU'); print('compiled')")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.int8.onnx")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "compiled" in done.stdout, (done.returncode, done.stderr[-500:])
