"""Beyond classifiers (issue 25): a model returning a dict of maps (a class map and a box map, nested) is pruned
from a folder of unlabelled images, recovered by distillation alone, verified and exported output by output,
with its output channels frozen; a labelled set's labels can be ignored; a structure prunekit cannot follow is
one error line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import prunekit
from prunekit.cli import main

MODEL = '''
import torch, torch.nn as nn

class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.cls = nn.Conv2d(64, 6, 1)
        self.box = nn.Conv2d(64, 4, 1)

    def forward(self, x):
        f = self.body(x)
        return {"maps": {"cls": self.cls(f), "boxes": self.box(f)}}

class Bad(TwoHeads):
    def forward(self, x):
        return {"cls": self.cls(self.body(x)), "note": "not a tensor"}

def two_heads(num_classes=None):
    return TwoHeads()

def bad(num_classes=None):
    return Bad()
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("labelfree")
    (d / "heads.py").write_text(MODEL)
    rng = np.random.default_rng(0)
    images = d / "images" / "nested"
    images.mkdir(parents=True)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i:03d}.png")
    labelled = d / "labelled"
    for split, n in (("train", 30), ("test", 10)):
        for c in ("a", "b"):
            (labelled / split / c).mkdir(parents=True)
            for i in range(n // 2):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(labelled / split / c /
                                                                                        f"{i}.png")
    return d


def test_a_two_headed_model_prunes_and_recovers_from_unlabelled_images(setup, tmp_path):
    out = tmp_path / "run"
    run = prunekit.prune(prunekit.PruneConfig(
        model=f"{setup / 'heads.py'}:two_heads", input_size=(3, 32, 32), data=str(setup / "images"),
        target="flops=0.3", schedule="oneshot", finetune_epochs=1, batch_size=8, calib_images=16,
        speed_batches=(), out=str(out)))
    # every 10th image held out (test), another 10th for validation
    assert (run["data"]["train"], run["data"]["val"], run["data"]["test"]) == (32, 4, 4) and not run["accuracy"]
    assert run["fidelity"]["kinds"] == {"maps.cls": "kl", "maps.boxes": "smooth-l1"}
    assert set(run["fidelity"]["pruned_finetuned"]) == {"maps.cls", "maps.boxes"}
    assert 0 <= run["fidelity"]["pruned"]["maps.cls"]["pixel_agreement"] <= 100
    assert run["finetune"]["distill"]["alpha"] == 1.0 and set(run["finetune"]["distill"]["losses"]) == {
        "maps.cls", "maps.boxes"}
    frozen = {g["root"]: g["frozen"] for g in run["groups"]}
    # the heads' channels are outputs: frozen, naming them; the body still prunes
    assert run["reduction"]["macs"] >= 0.3 and run["verification"][0]["passed"]
    assert all(r["out_after"] == r["out_before"] for r in run["layers"] if r["layer"] in ("cls", "box"))
    assert any("model's output 'maps." in (why or "") for why in frozen.values()), frozen
    model = prunekit.load(str(out), trust_code=True)
    report = prunekit.export_onnx(model, torch.randn(4, 3, 32, 32), str(tmp_path / "m.onnx"))
    assert report.passed and [c["check"] for c in report.checks if c["check"].startswith("onnxruntime ==")] == [
        "onnxruntime == pytorch (maps.cls)", "onnxruntime == pytorch (maps.boxes)"]
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "m.onnx"), "--runtimes", "onnxruntime-cpu", "--runs", "2",
                                  "--warmup", "1", "--batch-sizes", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["batches"][0]["frontier"][0]["p50_ms"] > 0


def test_a_search_bounds_the_loss_of_fidelity_without_labels(setup, tmp_path):
    run = prunekit.prune(prunekit.PruneConfig(
        model=f"{setup / 'heads.py'}:two_heads", input_size=(3, 32, 32), data=str(setup / "images"),
        target="fidelity=40", schedule="adaptive", budget_epochs=0.5, max_rounds=3, batch_size=8, calib_images=8,
        speed_batches=(), export=False, round_to=1, out=str(tmp_path / "run")))
    assert run["target"]["kind"] == "fidelity" and run["target"]["met"]
    worst = run["fidelity"]["worst_output"]
    assert worst["dense"] == worst["val_dense"] == 100.0  # the dense model agrees with itself
    assert 60.0 <= worst["val_pruned"] <= 100.0 and 0.0 <= worst["pruned"] <= 100.0  # within 40 points
    assert set(run["fidelity"]["pruned"]) == {"maps.cls", "maps.boxes"} and not run["accuracy"]
    rounds = [json.loads(line) for line in open(tmp_path / "run" / "rounds.jsonl")]
    assert rounds[0]["val_accuracy"] == 100.0 and len(rounds) >= 2


def test_an_accuracy_target_without_labels_is_refused_with_the_way_out(setup, tmp_path):
    r = CliRunner().invoke(main, ["prune", f"{setup / 'heads.py'}:two_heads", "--input-size", "3,32,32", "--data",
                                  str(setup / "images"), "--target", "acc=1", "--schedule", "adaptive", "--out",
                                  str(tmp_path / "run")])
    assert r.exit_code == 2 and "--target fidelity=" in r.output and r.output.startswith("error: "), r.output
    assert not (tmp_path / "run").exists()


def test_inspect_names_the_frozen_outputs(setup):
    r = CliRunner().invoke(main, ["inspect", f"{setup / 'heads.py'}:two_heads", "--input-size", "3,32,32",
                                  "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["outputs"] == "maps.cls (1, 6, 16, 16), maps.boxes (1, 4, 16, 16)"
    reasons = [g["frozen"] for g in info["groups"] if g["frozen"]]
    assert any("output 'maps.cls'" in why or "output 'maps.boxes'" in why for why in reasons), reasons


def test_labels_can_be_ignored(setup, tmp_path):
    run = prunekit.prune(prunekit.PruneConfig(
        model="resnet20", num_classes=2, data=str(setup / "labelled"), labels="ignore", target="flops=0.3",
        schedule="oneshot", finetune_epochs=1, batch_size=8, calib_images=8, speed_batches=(),
        out=str(tmp_path / "run")))
    assert run["finetune"]["distill"]["alpha"] == 1.0  # no cross-entropy term: nothing trained on a label
    assert "pruned_finetuned" in run["accuracy"] and "pruned_finetuned" in run["fidelity"]  # test labels still read


def test_a_structure_prunekit_cannot_follow_is_one_error_line(setup, tmp_path):
    r = CliRunner().invoke(main, ["prune", f"{setup / 'heads.py'}:bad", "--input-size", "3,32,32", "--data",
                                  "random", "--target", "flops=0.3", "--schedule", "oneshot", "--out",
                                  str(tmp_path / "run")])
    assert r.exit_code == 2 and r.output == ("error: the model returns a str at 'note': prunekit handles tensors and "
                                             "tuples, lists and dicts of tensors (nested too)\n"), r.output
    assert not (tmp_path / "run").exists()


def test_a_fine_tune_that_reads_worse_on_validation_images_is_undone(setup, tmp_path, monkeypatch):
    import prunekit.jobs.oneshot as oneshot

    def ruinous(model, bundle, schedule, compute=None, teacher=None):  # a fine-tune gone wrong
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-3.0)
        return {"steps": 1, "epochs": 1.0, "seconds": 0.0, "last_loss": 0.0}

    monkeypatch.setattr(oneshot, "finetune", ruinous)
    run = prunekit.prune(prunekit.PruneConfig(
        model=f"{setup / 'heads.py'}:two_heads", input_size=(3, 32, 32), data=str(setup / "images"),
        target="flops=0.3", schedule="oneshot", finetune_epochs=1, batch_size=8, calib_images=16,
        speed_batches=(), out=str(tmp_path / "run")))
    ft = run["finetune"]
    assert ft["kept"] is False and ft["judged_after"] < ft["judged_before"]
    fid = run["fidelity"]  # delivered as it was before the fine-tune: the same readings as after BN
    before = fid["pruned_bn"] if "pruned_bn" in fid else fid["pruned"]
    assert fid["pruned_finetuned"] == before
