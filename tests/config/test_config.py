"""Typed job configs (prunekit/config.py): the flat factory routes options to the job's type and its nested
training config, every config checks its fields on construction without touching a file, and the CLI's
defaults are the fields' own."""
from __future__ import annotations

import dataclasses

import click
import pytest

from prunekit.config import (
    JobConfig,
    OneShotConfig,
    PruneConfig,
    SearchConfig,
    TrainingConfig,
    check_paths,
    config_dict,
    option_default,
)
from prunekit.errors import PrunekitError

BASE = dict(model="resnet20", data="random", target="flops=0.5", out="runs/x")


def test_schedule_picks_the_type_and_training_options_nest():
    s = PruneConfig(**BASE, lr=0.02, batch_size=64, device="cpu", lam=0.01)
    assert type(s) is SearchConfig and s.schedule == "adaptive" and s.lam == 0.01
    assert s.training == TrainingConfig(batch_size=64, lr=0.02, device="cpu")
    f = PruneConfig(**BASE, schedule="fixed", rate=0.1)
    assert type(f) is SearchConfig and f.schedule == "fixed"
    o = PruneConfig(**BASE, schedule="oneshot", finetune_epochs=2)
    assert type(o) is OneShotConfig and o.schedule == "oneshot" and o.finetune_epochs == 2
    assert not hasattr(o, "lam") and not hasattr(s, "finetune_epochs")


@pytest.mark.parametrize("schedule", ["oneshot", "adaptive", "fixed"])
def test_saved_form_reads_back_to_the_same_config(schedule):
    cfg = PruneConfig(**BASE, schedule=schedule, input_size=(3, 32, 32), speed_batches=[1, 8], workers=2)
    saved = config_dict(cfg)
    assert saved["schedule"] == schedule and isinstance(saved["training"], dict)
    assert saved["input_size"] == [3, 32, 32]  # JSON-safe lists
    assert PruneConfig(**saved) == cfg


def test_flat_saved_form_of_older_runs_still_reads():
    old = {**BASE, "schedule": "adaptive", "lr": 0.05, "batch_size": 32, "train_lr": 0.2, "max_step": 0.2}
    cfg = PruneConfig(**old)
    assert cfg.training.lr == 0.05 and cfg.training.batch_size == 32 and cfg.train_lr == 0.2


def test_an_option_of_the_other_job_is_refused_unless_left_at_its_default():
    assert PruneConfig(**BASE, schedule="oneshot", lam=option_default("lam"), max_rounds=30).schedule == "oneshot"
    with pytest.raises(PrunekitError, match="--lam applies to a search"):
        PruneConfig(**BASE, schedule="oneshot", lam=0.1)
    with pytest.raises(PrunekitError, match="--finetune-epochs applies to --schedule oneshot"):
        PruneConfig(**BASE, finetune_epochs=1.0)
    with pytest.raises(PrunekitError, match="unknown prune option 'bogus'"):
        PruneConfig(**BASE, bogus=1)
    with pytest.raises(PrunekitError, match="unknown schedule"):
        PruneConfig(**BASE, schedule="greedy")


@pytest.mark.parametrize("kw, match", [
    (dict(target="flops=1.5"), "strictly between 0 and 1"),
    (dict(p=float("nan")), "--p must be a finite number"),
    (dict(batch_size=0), "--batch-size must be an integer ≥ 1"),
    (dict(train_fraction=0.0), "--train-fraction must be in"),
    (dict(device="tpu"), "device"),
    (dict(amp="int4"), "--amp must be one of"),
    (dict(workers=-1), "--workers must be an integer ≥ 0"),
    (dict(criterion="nope"), "nope"),
    (dict(group_cap=0.0), "--group-cap must be in"),
    (dict(cost="energy"), "--cost must be one of"),
    (dict(round_to=0), "round-to"),
    (dict(speed_batches=(0,)), "--speed-batches must be positive"),
    (dict(max_step=1.0), "--max-step must be a fraction"),
    (dict(budget_epochs=1.0, final_epochs=1.0), "--final-epochs must leave part"),
    (dict(rewind="weights"), "needs --rewind-checkpoint"),
    (dict(time_limit="soon"), "time limit must look like"),
    (dict(lr_schedule="linear"), "--lr-schedule must be one of step, cosine"),
    (dict(val_images=0), "--val-images must be an integer ≥ 1"),
    (dict(schedule="oneshot", target="acc=1"), "needs a search"),
    (dict(schedule="oneshot", target="fidelity=2"), "needs a search"),
    (dict(target="fidelity=120"), "the fidelity loss must be between 0 and 100 points"),
    (dict(schedule="oneshot", finetune_epochs=-1.0), "--finetune-epochs must be ≥ 0"),
])
def test_bad_fields_fail_on_construction(kw, match):
    with pytest.raises(PrunekitError, match=match):
        PruneConfig(**{**BASE, **kw})


def test_a_fidelity_target_bounds_a_loss_in_points_like_accuracy():
    from prunekit.config import parse_target

    t = parse_target("fidelity=2%")
    assert (t.kind, t.amount, t.bounds_quality) == ("fidelity", 2.0, True)
    assert parse_target("acc=1").bounds_quality and not parse_target("flops=0.5").bounds_quality


def test_construction_touches_no_file_and_check_paths_does(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cfg = PruneConfig(**{**BASE, "out": str(afile / "run"), "weights": str(tmp_path / "missing.pt")})
    with pytest.raises(PrunekitError, match="weights file not found"):
        check_paths(cfg)
    with pytest.raises(PrunekitError, match="is a file, not a folder"):
        check_paths(dataclasses.replace(cfg, weights=None))
    check_paths(dataclasses.replace(cfg, weights=None, out=str(tmp_path / "run")))


def test_replace_rechecks_the_fields():
    cfg = PruneConfig(**BASE)
    with pytest.raises(PrunekitError, match="--max-rounds must be an integer"):
        dataclasses.replace(cfg, max_rounds=0)


def test_cli_defaults_are_the_config_fields():
    """One place for each default: every `prunekit prune` option that is a config field shows its default."""
    from prunekit.cli.prune import prune

    names = {f.name for cls in (SearchConfig, OneShotConfig, TrainingConfig) for f in dataclasses.fields(cls)
             if f.default is not dataclasses.MISSING}
    checked = 0
    for param in prune.params:
        if not isinstance(param, click.Option) or param.name not in names:
            continue
        default = option_default(param.name)
        if param.is_flag:  # --trust-pickle, --overwrite…: off unless given, as the fields
            assert default is False, param.name
        elif param.name == "max_rounds":  # None on the CLI: "the saved run's" on --resume
            assert param.default is None
        elif param.name == "speed_batches":
            assert param.default == ",".join(map(str, default))
        else:
            assert param.default == default, param.name
        checked += 1
    assert checked >= 30


def test_job_configs_share_one_definition_of_common_fields():
    common = {f.name for f in dataclasses.fields(JobConfig)}
    for cls in (OneShotConfig, SearchConfig):
        own = {f.name: f.default for f in dataclasses.fields(cls)}
        assert common <= set(own)
        assert all(own[f.name] == f.default for f in dataclasses.fields(JobConfig))


def test_dispatcher_picks_the_job_by_type():
    from prunekit.jobs.pipeline import RUNNERS, prune

    assert set(RUNNERS) == {OneShotConfig, SearchConfig}
    with pytest.raises(PrunekitError, match="needs a OneShotConfig or SearchConfig"):
        prune(dict(BASE))
