"""run.json as one type (prunekit/runrecord.py): both jobs write every section, readers get one clear error
for a damaged or foreign record, and a record survives a write / read round trip."""
from __future__ import annotations

import dataclasses
import json

import pytest

import prunekit
from prunekit.errors import PrunekitError
from prunekit.runs.record import RunRecord

FIELDS = {f.name for f in dataclasses.fields(RunRecord)}


@pytest.fixture(scope="module")
def oneshot_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rr") / "run"
    run = prunekit.prune(prunekit.PruneConfig(model="resnet20", data="random", target="flops=0.3", out=str(out),
                                              schedule="oneshot", calib_images=8, verify_images=4, batch_size=8,
                                              speed_batches=(), round_to=1))
    return run, out


def test_oneshot_writes_a_complete_record(oneshot_run):
    run, out = oneshot_run
    on_disk = json.loads((out / "run.json").read_text())
    assert set(run) == set(on_disk) == FIELDS  # every section, null where it does not apply
    assert on_disk["search"] is None and on_disk["config"]["schedule"] == "oneshot"
    record = RunRecord.read(str(out))
    assert record.to_dict() == on_disk and record.reduction["macs"] >= 0.3


def test_search_writes_the_same_sections(tmp_path):
    from tests.jobs.test_search_loop import config, fake_eval, fake_train  # the fake-trainer search, seconds

    from prunekit.jobs.search.loop import run_search

    folder = tmp_path / "imgs"
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 2)):
        for c in range(10):
            (folder / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    folder / split / f"c{c}" / f"{i}.png")
    run = run_search(config(str(folder), tmp_path / "run", "params=0.2", max_step=0.2), trainer=fake_train,
                     evaluator=fake_eval())
    assert set(run) == FIELDS and run["search"]["rounds"] >= 1 and run["finetune"] is None
    assert RunRecord.read(str(tmp_path / "run")).search == run["search"]


@pytest.mark.parametrize("content, match", [
    ("[1, 2]", "not a JSON object"),
    ("{}", "model.name is missing"),
    ('{"model": {"name": "m"}, "target": {"text": "flops=0.5"}, "config": {"schedule": "oneshot"}}',
     "config.criterion is missing"),
    ("{not json", "not valid JSON"),
])
def test_damaged_records_get_one_clear_error(tmp_path, content, match):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(PrunekitError, match=match):
        RunRecord.read(str(tmp_path))


def test_no_run_json_names_the_folder(tmp_path):
    with pytest.raises(PrunekitError, match="is not a run folder"):
        RunRecord.read(str(tmp_path))


def test_unknown_keys_of_newer_versions_are_ignored(oneshot_run, tmp_path):
    _, out = oneshot_run
    d = json.loads((out / "run.json").read_text())
    d["from_the_future"] = {"x": 1}
    rec = RunRecord.from_dict(d)
    rec.write(str(tmp_path))
    assert "from_the_future" not in json.loads((tmp_path / "run.json").read_text())
    assert RunRecord.read(str(tmp_path)) == rec
