"""``--log-format json``: every line prunekit writes, on stdout and stderr, is one JSON object — for prune,
export, quantize, bench and check, run as a pipeline would run them (real streams, a fresh process each)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def run(*args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-m", "prunekit.cli", *map(str, args), "--log-format", "json"], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)


def objects(result) -> dict[str, list[dict]]:
    streams = {}
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        lines = [ln for ln in text.splitlines() if ln.strip()]
        for ln in lines:
            obj = json.loads(ln)  # fails the test on any line that is not JSON
            assert isinstance(obj, dict) and "event" in obj, ln
        streams[name] = [json.loads(ln) for ln in lines]
    return streams


def test_every_line_of_every_verb_is_json(tmp_path):
    from tests.compute.test_device_data import make_folder

    run_dir = tmp_path / "run"
    data = make_folder(tmp_path / "ds", 12, classes=10)  # labelled: the fine-tune's progress lines are JSON too
    r = run("prune", "resnet20", "--data", data, "--target", "params=0.3", "--schedule", "oneshot",
            "--finetune-epochs", 1, "--batch-size", 4, "--calib-images", 8, "--speed-batches", "none",
            "--out", run_dir, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = objects(r)
    summary = [o for o in out["stdout"] if o["event"] == "summary"]
    assert len(summary) == 1 and summary[0]["reduction"]["params"] >= 0.3 and summary[0]["out"] == str(run_dir)
    assert summary[0]["accuracy"]["pruned_finetuned"] is not None
    assert any(o["event"] == "train" and "loss" in o for o in out["stderr"]), out["stderr"][:5]
    r = run("export", run_dir, "--out", tmp_path / "m.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert any("onnxruntime matches PyTorch" in o["message"] for o in objects(r)["stdout"])
    r = run("quantize", tmp_path / "m.onnx", "--data", "random", "--out", tmp_path / "m.int8.onnx",
            "--calib-images", 8, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert any(o["event"] == "warning" for o in objects(r)["stderr"])  # calibrating on random inputs
    r = run("bench", tmp_path / "m.onnx", "--batch-sizes", 1, "--runs", 3, "--warmup", 1, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    result = [o for o in objects(r)["stdout"] if o["event"] == "result"]
    assert len(result) == 1 and result[0]["batches"][0]["batch"] == 1
    r = run("check", tmp_path / "m.onnx", "--max-params", 10, cwd=tmp_path)
    assert r.returncode == 1
    assert objects(r)["stdout"]
    r = run("check", tmp_path / "missing.onnx", "--max-params", 10, cwd=tmp_path)  # a user error, as JSON
    assert r.returncode == 2 and objects(r)["stderr"][-1]["event"] == "error"
    r = run("prune", "resnet20", "--bogus", cwd=tmp_path)  # click's own usage error
    assert r.returncode == 2 and objects(r)["stderr"][-1]["event"] == "error"
