"""The CLI through click's runner: each verb works, and user mistakes give one clear line and exit ≠ 0."""
from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

from prunekit import __version__
from prunekit.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_version_and_help():
    assert run("--version").output.strip().endswith(__version__)
    for verb in ("inspect", "prune", "export", "quantize", "bench", "check", "report", "models", "latency-table",
                 "runtimes"):
        r = run(verb, "--help")
        assert r.exit_code == 0 and "Example" in r.output


def test_runtimes_lists_the_registry():
    from prunekit.runtimes import RUNTIMES

    r = run("runtimes", "--json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.output)
    assert [x["name"] for x in listed["runtimes"]] == list(RUNTIMES) and listed["cpu"]["cpu"]
    assert next(x for x in listed["runtimes"] if x["name"] == "onnxruntime-cpu")["available"]


def test_models_lists_builtins():
    r = run("models")
    assert r.exit_code == 0 and "resnet56" in r.output and "torchvision:NAME" in r.output


def test_inspect_json():
    r = run("inspect", "resnet20", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["params"] == 269_722 and info["macs"] == 40_551_040 and info["flops"] == 2 * info["macs"]
    assert len(info["groups"]) == 12 and all(g["prunable"] for g in info["groups"])


def test_inspect_table_shows_frozen_groups():
    r = run("inspect", "torchvision:convnext_tiny", "--input-size", "3,64,64")
    assert r.exit_code == 0 and "frozen" in r.output and "LayerNorm" in r.output


def test_prune_then_export(tmp_path):
    out = tmp_path / "run"
    r = run("prune", "resnet20", "--data", "random", "--target", "params=0.5", "--out", out, "--calib-images", 16,
            "--schedule", "oneshot", "--quiet")
    assert r.exit_code == 0, r.output
    assert "params -5" in r.output
    assert sorted(os.listdir(out)) == ["channels.png", "check_inputs.npz", "pruned.pt", "report.md", "run.json"]
    assert "| parameters | 269,722 |" in (out / "report.md").read_text()
    r = run("report", out)
    assert r.exit_code == 0 and r.output.strip().endswith("report.md")
    # the run folder loads without unpickling code
    payload = torch.load(out / "pruned.pt", weights_only=True)
    assert payload["format"] == "prunekit.pruned/1" and payload["history"]
    onnx_path = tmp_path / "m.onnx"
    r = run("export", out, "--out", onnx_path, "--quiet")
    assert r.exit_code == 0, r.output
    assert onnx_path.exists() and "onnxruntime matches PyTorch" in r.output
    # bench a run folder: exports its pruned and dense models, times both runtimes, interleaved
    r = run("bench", out, "--runs", 3, "--warmup", 1, "--batch-sizes", 1, "--runtimes", "onnxruntime-cpu,torch-cpu",
            "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)["batches"][0]
    assert {"onnxruntime", "pytorch", "speedup", "speedup_efficiency"} <= set(row)
    assert row["mac_ratio"] > 1.2 and (out / "model.onnx").exists() and (out / "dense.onnx").exists()
    # a pruned.pt file is accepted as well, with the TorchScript exporter
    r = run("export", out / "pruned.pt", "--out", tmp_path / "m2.onnx", "--exporter", "torchscript", "--quiet")
    assert r.exit_code == 0, r.output


def _assert_clean_error(r, match, code=2):
    assert r.exit_code == code, r.output
    assert r.output.startswith("error: ") and match in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("args,match", [
    (["prune", "resnet21", "--data", "random", "--target", "params=0.5"], "unknown model"),
    (["prune", "resnet20", "--data", "random", "--target", "params=1.0"], "strictly between 0 and 1"),
    (["prune", "resnet20", "--data", "random", "--target", "params=0"], "strictly between 0 and 1"),
    (["prune", "resnet20", "--data", "random", "--target", "flops=-0.2"], "strictly between 0 and 1"),
    (["prune", "resnet20", "--data", "random", "--target", "size=0.5"], "unknown target kind"),
    (["prune", "resnet20", "--data", "random", "--target", "params=half"], "must look like"),
    (["prune", "resnet20", "--data", "random", "--target", "acc=1.0", "--schedule", "oneshot"], "needs a search"),
    (["prune", "resnet20", "--data", "random", "--target", "acc=1.0"],
     "needs real images with a validation split (random pixels have none)"),
    (["prune", "resnet20", "--data", "random", "--target", "latency=0"], "must be positive"),
    (["prune", "resnet20", "--data", "random", "--target", "params=0.5", "--time-limit", "soon"], "time limit"),
    (["prune", "resnet20", "--data", "random", "--target", "params=0.5", "--train-fraction", "1.5"], "train-fraction"),
    (["prune", "resnet20", "--data", "random", "--target", "params=0.5", "--rewind", "weights"],
     "rewind-checkpoint"),
    (["prune", "resnet20", "--data", "nowhere", "--target", "params=0.5"], "not found"),
    (["prune", "resnet20", "--weights", "missing.pt", "--data", "random", "--target", "params=0.5"], "not found"),
    (["prune", "resnet20", "--data", "random", "--target", "params=0.5", "--input-size", "3,32"], "C,H,W"),
    (["prune", "resnet20", "--data", "random", "--target", "params=0.5", "--input-size", "1,32,32"],
     "does not run on inputs"),
    (["prune", "resnet20", "--data", "random", "--target", "params=0.5", "--criterion", "taylor"],
     "Invalid value for '--criterion'"),
])
def test_prune_user_mistakes(tmp_path, args, match):
    out = tmp_path / "run"
    r = run(*args, "--out", out)
    _assert_clean_error(r, match)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_prune_corrupt_checkpoint_and_pickle(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    _assert_clean_error(run("prune", "resnet20", "--weights", bad, "--data", "random", "--target", "params=0.5",
                            "--out", tmp_path / "r1"), "cannot read")
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2)), whole)
    _assert_clean_error(run("prune", whole, "--data", "random", "--target", "params=0.5", "--out", tmp_path / "r2"),
                        "--trust-pickle")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_prune_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _assert_clean_error(run("prune", "resnet20", "--data", "random", "--target", "params=0.5", "--out", out),
                        "already exists")
    assert os.listdir(out) == ["keep.txt"]


def test_report_needs_a_run_folder(tmp_path):
    _assert_clean_error(run("report", tmp_path), "not a run folder")


def test_resume_without_a_search(tmp_path):
    _assert_clean_error(run("prune", "--resume", tmp_path), "no search to resume")
    r = run("prune", "resnet20")
    assert r.exit_code == 2 and "missing --data" in r.output


def test_export_user_mistakes(tmp_path):
    _assert_clean_error(run("export", tmp_path, "--out", tmp_path / "m.onnx"), "not a run folder")
    _assert_clean_error(run("export", "nomodel", "--out", tmp_path / "m.onnx"), "unknown model")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    _assert_clean_error(run("export", bad, "--out", tmp_path / "m.onnx"), "not a PyTorch file")
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), whole)
    _assert_clean_error(run("export", whole, "--out", tmp_path / "m.onnx"), "--trust-pickle")
    assert not (tmp_path / "m.onnx").exists()
