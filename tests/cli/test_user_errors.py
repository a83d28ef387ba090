"""Trust and bad input (issue 8): a run folder never runs code it names without --trust-code; every user
mistake is one ``error:`` line with exit 2 (130 for Ctrl-C), no traceback, nothing half-written."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import prunekit
from prunekit.cli import main
from prunekit.deploy.bench import speedup_words as _speedup_words
from prunekit.errors import PrunekitError

MODEL_FILE = """
import pathlib, torch.nn as nn
pathlib.Path(__file__).with_name("IMPORTED").write_text("the run folder ran my code")

def factory():
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

def broken():
    raise RuntimeError("boom")
"""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(r, match, code=2):
    assert r.exit_code == code, r.output
    assert r.output.startswith("error: ") and match in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 3, r.output


def no_leftovers(folder) -> bool:
    return not [p for p in os.listdir(folder) if p.startswith(".") or "tmp" in p]


@pytest.fixture
def image_folder(tmp_path, monkeypatch):
    """A labelled ImageFolder of 32×32 images: 10 classes × (10 train + 2 test); ``make(classes=...)`` for others."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))

    def make(classes=10, name="ds", bad_file=False):
        root = tmp_path / name
        rng = np.random.default_rng(0)
        for split, n in (("train", 10), ("test", 2)):
            for c in range(classes):
                d = root / split / f"class{c}"
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
        if bad_file:
            (root / "train" / "class0" / "notes.jpg").write_text("not an image")
        return str(root)
    return make


# ---------------------------------------------------------------------------------------------- trust
@pytest.fixture
def file_model_run(tmp_path):
    code = tmp_path / "mymodel.py"
    code.write_text(MODEL_FILE)
    out = tmp_path / "run"
    r = run("prune", f"{code}:factory", "--input-size", "3,32,32", "--data", "random", "--target", "params=0.3",
            "--schedule", "oneshot", "--calib-images", 8, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    (tmp_path / "IMPORTED").unlink()  # the user named the file on the command line: importing it was right
    return out, tmp_path / "IMPORTED"


def test_run_folder_never_imports_the_code_it_names(file_model_run, tmp_path):
    out, marker = file_model_run
    onnx_path = tmp_path / "m.onnx"
    for args in (("export", out, "--out", onnx_path), ("bench", out, "--runs", 1, "--warmup", 0),
                 ("export", out / "pruned.pt", "--out", onnx_path)):
        assert_clean_error(run(*args), "--trust-code")
        assert "mymodel.py" in run(*args).output
    with pytest.raises(PrunekitError, match="mymodel.py"):
        prunekit.load(str(out))
    assert not marker.exists() and not onnx_path.exists()
    r = run("export", out, "--out", onnx_path, "--trust-code", "--quiet")  # the user vouches for it
    assert r.exit_code == 0, r.output
    assert marker.exists() and onnx_path.exists()


def test_resume_never_trusts_the_state_file(tmp_path):
    code = tmp_path / "evil.py"
    code.write_text(MODEL_FILE)
    state = tmp_path / "run" / "search" / "state.json"
    state.parent.mkdir(parents=True)
    config = {"model": f"{code}:factory", "data": "random", "target": "params=0.3", "out": str(tmp_path / "run"),
              "trust_pickle": True, "input_size": [3, 32, 32]}
    state.write_text(json.dumps({"config": config, "dense": {"params": 1, "macs": 1, "val_accuracy": 1, "scales": {}},
                                 "controller": {"cfg": {"kind": "params", "target": 0.3}, "T": 0, "lam": 0.1,
                                                "rounds": [], "rollbacks": {}, "unacceptable": [], "elapsed_s": 0,
                                                "stopped": None, "current": None}}))
    assert_clean_error(run("prune", "--resume", tmp_path / "run"), "--trust-code")
    assert not (tmp_path / "IMPORTED").exists()


# ---------------------------------------------------------------------------------------------- mistakes
def _prune(*extra, data="random", target="params=0.3"):
    return ["prune", "resnet20", "--data", data, "--target", target, "--schedule", "oneshot", "--calib-images", 8,
            *extra]


@pytest.mark.parametrize("case,match", [
    ("empty weights", "the file is empty"),
    ("batch size 0", "--batch-size must be an integer ≥ 1"),
    ("p nan", "--p must be a finite number"),
    ("lr inf", "--lr must be a finite number"),
    ("factory raises", "m.py:broken() failed"),
    ("factory raises", "RuntimeError: boom"),
    ("out under a file", "is a file"),
    ("out unwritable", "cannot write"),
    ("missing run folder as model", "no such file or run folder: runs/r56"),
    ("random bytes", "is not a PyTorch file"),
    ("num classes 5", "10 classes but resnet20 outputs 5"),
    ("one class", "1 classes but resnet20 outputs 10"),
    ("not an image", "cannot decode image"),
])
def test_prune_mistakes_are_one_line(case, match, tmp_path, image_folder):
    out = tmp_path / "run"
    if case == "empty weights":
        (tmp_path / "w.pt").write_bytes(b"")
        args = _prune("--weights", tmp_path / "w.pt")
    elif case == "batch size 0":
        args = _prune("--batch-size", 0)
    elif case == "p nan":
        args = _prune("--p", "nan")
    elif case == "lr inf":
        args = _prune("--lr", "inf")
    elif case == "factory raises":
        (tmp_path / "m.py").write_text(MODEL_FILE)
        args = ["prune", f"{tmp_path / 'm.py'}:broken", "--data", "random", "--target", "params=0.3"]
    elif case == "out under a file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "run"
        args = _prune()
    elif case == "out unwritable":
        out = "/proc/prunekit-test/run"  # not writable, even for root
        args = _prune()
    elif case == "missing run folder as model":
        args = ["prune", "runs/r56", "--data", "random", "--target", "params=0.3"]
    elif case == "random bytes":
        (tmp_path / "noise.pt").write_bytes(os.urandom(256))
        args = ["prune", tmp_path / "noise.pt", "--data", "random", "--target", "params=0.3"]
    elif case == "num classes 5":
        args = _prune("--num-classes", 5, data=image_folder())
    elif case == "one class":
        args = _prune(data=image_folder(classes=1, name="one"))
    else:
        args = _prune(data=image_folder(bad_file=True, name="bad"))
    assert_clean_error(run(*args, "--out", out), match)
    assert not os.path.exists(out) and no_leftovers(tmp_path)


def test_report_of_an_incomplete_run_record(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    assert_clean_error(run("report", tmp_path), "not a complete prunekit run record")
    (tmp_path / "run.json").write_text('{"model": ')
    assert_clean_error(run("report", tmp_path), "not valid JSON")
    assert sorted(os.listdir(tmp_path)) == ["run.json"]


@pytest.mark.parametrize("content,match", [("{not json", "not valid JSON"), ("{}", "damaged"),
                                           ('{"config": {}, "controller": {}, "dense": {}}', "damaged")])
def test_resume_with_a_damaged_state(tmp_path, content, match):
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "state.json").write_text(content)
    assert_clean_error(run("prune", "--resume", tmp_path), match)


def test_check_refuses_nan_figures(tmp_path):
    from prunekit.deploy.export import export_onnx
    from prunekit.models import resolve_model

    onnx_path = tmp_path / "m.onnx"
    export_onnx(resolve_model("resnet20")[0], torch.randn(2, 3, 32, 32), str(onnx_path), exporter="torchscript")
    (tmp_path / "base.json").write_text('{"params": NaN}')
    assert_clean_error(run("check", onnx_path, "--baseline", tmp_path / "base.json"), "not valid JSON")
    assert_clean_error(run("check", onnx_path, "--max-params", "nan"), "finite")
    assert_clean_error(run("check", onnx_path, "--max-macs", 1e9, "--tolerance", "nan%"), "tolerance")


def test_export_mistakes(tmp_path):
    out = tmp_path / "m.onnx"
    assert_clean_error(run("export", "resnet20", "--out", out, "--atol", -1), "--atol must be")
    assert_clean_error(run("export", "resnet20", "--out", tmp_path), "is a directory")
    (tmp_path / "afile").write_text("x")
    assert_clean_error(run("export", "resnet20", "--out", tmp_path / "afile" / "m.onnx"), "is a file")
    assert not out.exists() and no_leftovers(tmp_path)


def test_export_into_a_new_folder_warns(tmp_path):
    out = tmp_path / "new" / "deeper" / "m.onnx"
    r = run("export", "resnet20", "--out", out, "--exporter", "torchscript", "--quiet")
    assert r.exit_code == 0 and "warning: creating the folder" in r.output and out.exists()


def test_usage_errors_are_one_line():
    for args in (["prune", "--bogus"], ["--bogus"], ["frobnicate"], ["prune", "resnet20", "--batch-size", "x"],
                 ["prune", "resnet20"]):
        r = run(*args)
        assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1, r.output


def test_slower_than_dense_is_said_in_words():
    assert _speedup_words(0.94).endswith("SLOWER than dense") and _speedup_words(1.3) == "1.30×"


# ---------------------------------------------------------------------------------------------- interrupts
def test_ctrl_c_in_oneshot_writes_nothing(tmp_path, monkeypatch):
    import prunekit.core.surgery as surgery

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(surgery, "apply_plan", interrupt)  # the cut, inside the one cut-and-verify stage
    r = run(*_prune("--out", tmp_path / "run", "--quiet"))
    assert_clean_error(r, "nothing was written", code=130)
    assert os.listdir(tmp_path) == []


def test_ctrl_c_in_a_search_says_how_to_resume(tmp_path, monkeypatch, image_folder):
    import prunekit.jobs.search.loop as search

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(search.Search, "run_round", interrupt)
    out = tmp_path / "run"
    r = run("prune", "resnet20", "--data", image_folder(), "--target", "params=0.3", "--calib-images", 8,
            "--batch-size", 16, "--out", out, "--quiet")
    assert_clean_error(r, f"prunekit prune --resume {out}", code=130)
    assert "0 finished pruning round" in r.output and (out / "search" / "state.json").exists()


def test_ctrl_c_while_caching_leaves_no_temp_file(tmp_path, monkeypatch, image_folder):
    import prunekit.data.cache as cache
    from prunekit.data import load_data

    root = image_folder()

    def interrupt(path, **arrays):
        open(path, "wb").write(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(cache.np, "savez", interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_data(root)
    assert not [p for p in os.listdir(tmp_path / "cache") if "tmp" in p]


# ---------------------------------------------------------------------------------------------- outputs
def test_outputs_follow_the_umask_and_reload(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert run(*_prune("--out", out, "--quiet")).exit_code == 0
        assert run("export", out, "--out", tmp_path / "m.onnx", "--quiet").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    for f in [*out.iterdir(), tmp_path / "m.onnx"]:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o644, f
    run_json = json.loads((out / "run.json").read_text())
    assert [c["check"] for c in run_json["verification"]] == ["masked == pruned", "pruned.pt reloads to the same model"]
    # one MAC count: run.json and the ONNX graph agree (the option-A shortcut is data movement in both)
    from prunekit.deploy.speed import onnx_info

    assert onnx_info(str(tmp_path / "m.onnx"))["macs"] == run_json["pruned"]["macs"]


def test_module_metadata_survives_the_run_folder(tmp_path):
    """MNASNet's loader reads the per-module ``version`` of the state dict; pruned.pt must keep it."""
    out = tmp_path / "run"
    cfg = prunekit.PruneConfig(model="torchvision:mnasnet0_5", data="random", target="flops=0.2", out=str(out),
                               schedule="oneshot", input_size=(3, 64, 64), calib_images=4, verify_images=2,
                               check_images=2, batch_size=4)
    run_record = prunekit.prune(cfg)
    assert run_record["verification"][-1]["passed"]
    model = prunekit.load(str(out))
    assert sum(p.numel() for p in model.parameters()) == run_record["pruned"]["params"]


@pytest.mark.parametrize("target,match", [("speedup=1", "greater than 1"), ("speedup=0.5", "greater than 1"),
                                          ("speedup=nan", "must look like"), ("speedup=fast", "must look like"),
                                          ("speedup=1e400", "greater than 1")])
def test_speedup_targets_that_make_no_sense(target, match, tmp_path):
    out = tmp_path / "run"
    assert_clean_error(run(*_prune(target=target), "--out", out), match)
    assert not os.path.exists(out)


@pytest.mark.parametrize("option,value,match", [("--distill-alpha", "1.5", "--distill-alpha must be in [0, 1]"),
                                                ("--distill-temperature", "0", "must be positive"),
                                                ("--bn-images", "-1", "--bn-images must be an integer ≥ 0"),
                                                ("--allocate", "greedy", "Invalid value for '--allocate'")])
def test_recovery_options_are_checked(option, value, match, tmp_path):
    assert_clean_error(run(*_prune(option, value), "--out", tmp_path / "run"), match)
