"""The prepared GPU check (benchmarks/gpu_check.py) works as a script: its --dry-run runs the same steps on the
CPU at tiny sizes, within its deadline, and writes its JSON and Markdown report."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, shared_file

pytestmark = pytest.mark.slow


def test_gpu_check_dry_run(tmp_path):
    shared_file("weights", "resnet20-cifar10jpeg.pt")
    shared_file("data", "cifar10-jpeg.tar.gz")
    # the suite runs the cheaper steps (torchrun and bench are covered by their own tests; all five pass the dry
    # run, about 7 min on 2 busy cores); the pareto step is benchmarks/pareto.py's own run
    steps = "train,search,latency_table"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out",
                        str(tmp_path), "--steps", steps, "--deadline", "540"], capture_output=True, text=True,
                       timeout=600)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert r.returncode == 0, json.dumps(report, indent=1)[-3000:]
    assert [report["steps"][s]["status"] for s in steps.split(",")] == ["ok"] * 3
    assert report["steps"]["train"]["result"]["images_per_s"] > 0
    assert report["steps"]["search"]["result"]["summary"]["event"] == "summary"
    assert len(report["steps"]["latency_table"]["result"]["plans"]) == 3
    assert "| train | ok |" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_refuses_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "no CUDA GPU" in r.stderr
