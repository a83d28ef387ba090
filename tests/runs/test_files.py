"""prunekit/files.py: atomic writes with the umask's modes, JSON that refuses NaN, output checks before work."""
from __future__ import annotations

import json
import os
import stat

import pytest

from prunekit.errors import PrunekitError
from prunekit.files import (
    atomic_write_bytes,
    atomic_write_json,
    check_output_folder,
    make_temp_dir,
    read_json,
    require_finite,
)


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "a.json"
    atomic_write_json(str(p), {"x": (1, 2)})
    atomic_write_json(str(p), {"x": 3})
    assert json.loads(p.read_text()) == {"x": 3}
    assert os.listdir(p.parent) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(str(p), {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(str(p), {"bad": object()})
    assert json.loads(p.read_text()) == {"ok": 1} and os.listdir(tmp_path) == ["a.json"]


def test_modes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(str(tmp_path / "f"), b"x")
        d = make_temp_dir(str(tmp_path), "run-")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o755


@pytest.mark.parametrize("text, match", [("{", "not valid JSON"), ('{"a": NaN}', "NaN is not a number"),
                                         ('{"a": Infinity}', "Infinity is not a number")])
def test_read_json_refuses_malformed_and_non_finite(tmp_path, text, match):
    (tmp_path / "b.json").write_text(text)
    with pytest.raises(PrunekitError, match=match):
        read_json(str(tmp_path / "b.json"), "baseline")


def test_read_json_names_a_missing_file(tmp_path):
    with pytest.raises(PrunekitError, match="no such baseline"):
        read_json(str(tmp_path / "none.json"), "baseline")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", True, None])
def test_require_finite(value):
    with pytest.raises(PrunekitError, match="--x must be a finite number"):
        require_finite("--x", value)


def test_output_folder_checks(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    (tmp_path / "afile").write_text("x")
    check_output_folder(str(tmp_path / "new" / "run"), overwrite=False)  # creatable: fine
    assert not (tmp_path / "new").exists()  # and nothing was created by checking
    with pytest.raises(PrunekitError, match="already exists and is not empty"):
        check_output_folder(str(tmp_path / "full"), overwrite=False)
    check_output_folder(str(tmp_path / "full"), overwrite=True)
    with pytest.raises(PrunekitError, match="is a file, not a folder"):
        check_output_folder(str(tmp_path / "afile"), overwrite=True)
    with pytest.raises(PrunekitError, match="afile is a file, not a folder"):
        check_output_folder(str(tmp_path / "afile" / "run"), overwrite=False)
