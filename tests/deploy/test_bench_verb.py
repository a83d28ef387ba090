"""ONNX MAC counting and the bench verb (the timing statistics: tests/runtimes/test_timing.py)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from prunekit.deploy.speed import onnx_info
from prunekit.cli import main
from prunekit.deploy.export import export_onnx
from prunekit.core.metrics import count_model
from prunekit.models import resolve_model


@pytest.fixture(scope="module")
def r20_onnx(tmp_path_factory):
    model, spec = resolve_model("resnet20")
    path = tmp_path_factory.mktemp("onnx") / "r20.onnx"
    export_onnx(model, torch.randn(2, 3, 32, 32), str(path), exporter="torchscript")
    return str(path), count_model(model, spec.input_size)


def test_onnx_macs_match_pytorch_count(r20_onnx):
    path, count = r20_onnx
    info = onnx_info(path)
    # the option-A shortcuts run as 1×1 selection convs in ONNX and are skipped, as in PyTorch's count
    assert info["input_size"] == (3, 32, 32)
    assert info["macs"] == count.macs


def test_bench_cli_json(r20_onnx):
    path, _ = r20_onnx
    r = CliRunner().invoke(main, ["bench", path, "--vs", path, "--runs", "3", "--warmup", "1", "--batch-sizes", "1,2",
                                  "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [b["batch"] for b in out["batches"]] == [1, 2]
    row = out["batches"][0]
    assert row["onnxruntime"]["pruned"]["runs"] == 3 and row["mac_ratio"] == pytest.approx(1.0)
    assert row["speedup_efficiency"] == pytest.approx(row["speedup"])


@pytest.mark.parametrize("args,code,match", [
    (["bench", "missing.onnx"], 2, "no such ONNX file"),
    (["bench", "CORRUPT"], 2, "cannot read ONNX"),
    (["bench", "R20", "--provider", "tpu"], 2, "Invalid value"),
    (["bench", "R20", "--batch-sizes", "0"], 2, "--batch-sizes"),
])
def test_bench_user_mistakes(r20_onnx, tmp_path, args, code, match):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not onnx")
    args = [str(corrupt) if a == "CORRUPT" else r20_onnx[0] if a == "R20" else a for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == code and match in r.output and "Traceback" not in r.output


def test_bench_cuda_without_gpu_is_a_clear_error(r20_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present")
    r = CliRunner().invoke(main, ["bench", r20_onnx[0], "--provider", "cuda"])
    assert r.exit_code == 2 and "CUDA execution provider is not available" in r.output
