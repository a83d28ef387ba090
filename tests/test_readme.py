"""The README's main job runs as written, in a fresh shell: same commands and flags, on ResNet-20 with a tiny
fine-tuning budget instead of ResNet-56 for 7 minutes, and the final bench on a few test images and runs. The
export must work without PRUNEKIT_DATA (the run folder carries its own check images)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT, shared_file

pytestmark = pytest.mark.slow


def main_job_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Run the main job", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]


def test_readme_main_job_runs_as_written(tmp_path):
    shared_file("data", "cifar10-jpeg.tar.gz")
    shared_file("weights", "resnet20-cifar10jpeg.pt")
    commands = main_job_commands()
    assert len(commands) == 3 and commands[0].startswith("PRUNEKIT_DATA=") and " export " in commands[1]
    assert "PRUNEKIT_DATA" not in commands[1]  # export needs no data
    assert " bench " in commands[2] and "--runtime openvino-cpu" in commands[0]
    script = []
    for c in commands:
        c = c.replace("resnet56", "resnet20").replace("runs/", f"{tmp_path}/runs/")
        c = re.sub(r"--finetune-minutes \S+", "--finetune-minutes 0.05", c)
        if " bench " in c:
            c += " --eval-images 200 --runs 5 --warmup 1 --batch-sizes 32"
        script.append(c)
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PRUNEKIT_CACHE", "LANG")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"
    result = subprocess.run(["bash", "-ec", "\n".join(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "runs").rglob("*.onnx")), result.stdout
    assert "onnxruntime matches PyTorch" in result.stdout and "images stored in the run folder" in result.stdout
    assert "over the fastest dense deployment" in result.stdout and "fastest dense deployment:" in result.stdout
    assert "acc " in result.stdout  # the bench measured each runtime's accuracy on the test images
