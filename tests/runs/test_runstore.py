"""prunekit/runstore.py: the saved search a resume reads (checked for shape, its config re-validated, trust
never read from it) and what a Ctrl-C leaves behind."""
from __future__ import annotations

import json

import pytest

from prunekit.config import SearchConfig
from prunekit.errors import PrunekitError
from prunekit.jobs.search.store import interrupted_message, read_resume_state, state_path
from prunekit.jobs.search.loop import run_search
from tests.jobs.test_search_loop import config, fake_eval, fake_train, folder  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def saved(folder, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("store") / "run"
    run_search(config(folder, out, "params=0.2", max_step=0.2), trainer=fake_train, evaluator=fake_eval())
    return json.loads(open(state_path(str(out))).read())


def write_state(tmp_path, state) -> str:
    out = tmp_path / "run"
    (out / "search").mkdir(parents=True)
    (out / "search" / "state.json").write_text(json.dumps(state))
    return str(out)


def test_saved_state_reads_back_as_a_search_config(saved, tmp_path):
    state = read_resume_state(write_state(tmp_path, saved))
    assert isinstance(state["config"], SearchConfig) and state["config"].training.batch_size == 16


def test_flat_config_of_older_runs_reads(saved, tmp_path):
    cfg = dict(saved["config"])
    flat = {**{k: v for k, v in cfg.items() if k != "training"}, **cfg["training"], "extra": {}}
    state = read_resume_state(write_state(tmp_path, {**saved, "config": flat}))
    assert state["config"].training.batch_size == 16


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("controller"), "is damaged"),
    (lambda s: s["config"].update(lam=-1), "--lam must be positive"),
    (lambda s: s["config"].update(schedule="oneshot"), "is damaged"),
    (lambda s: s["dense"].pop("scales"), "scales"),
    (lambda s: s["config"].update(bogus=1), "unknown prune option"),
])
def test_damaged_state_is_one_clear_error(saved, tmp_path, change, match):
    state = json.loads(json.dumps(saved))
    change(state)
    with pytest.raises(PrunekitError, match=match):
        read_resume_state(write_state(tmp_path, state))


def test_no_state_to_resume(tmp_path):
    with pytest.raises(PrunekitError, match="has no search to resume"):
        read_resume_state(str(tmp_path))


def test_interrupt_message_keeps_finished_rounds_or_removes_an_empty_run(saved, tmp_path):
    out = write_state(tmp_path, saved)
    msg = interrupted_message(out)
    assert f"prunekit prune --resume {out}" in msg and "finished pruning round" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "nothing was kept" in interrupted_message(str(empty)) and not empty.exists()
