"""core/manifest.py: an output folder bound to its settings; a mismatch is one error naming each difference."""
import json

import pytest

from hairdiff.core.errors import OutputMismatchError
from hairdiff.core.manifest import MANIFEST, bind, differences


def test_first_run_binds_then_equal_settings_resume(tmp_path):
    s = {"stores": ["/a.zarr"], "limit": 32, "recipe": {"iters": 10, "crop": (64, 64)}}
    assert bind(tmp_path / "out", "reproduce", s, fix="pass another --out") is False
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["reproduce"]["limit"] == 32
    # tuples read back as lists: the same settings
    assert bind(tmp_path / "out", "reproduce", s, fix="pass another --out") is True


def test_mismatch_names_every_difference_and_keeps_the_record(tmp_path):
    bind(tmp_path, "sweep", {"limit": 32, "recipe": {"iters": 10}, "ids": "x"}, fix="f")
    with pytest.raises(OutputMismatchError) as e:
        bind(tmp_path, "sweep", {"limit": 64, "recipe": {"iters": 20}}, fix="pass another --out")
    msg = str(e.value)
    assert "limit: 32 -> 64" in msg and "recipe.iters: 10 -> 20" in msg and 'ids: "x" -> (absent)' in msg
    assert msg.endswith("pass another --out") and "\n" not in msg
    assert json.loads((tmp_path / MANIFEST).read_text())["sweep"]["limit"] == 32  # nothing overwritten


def test_commands_are_bound_separately(tmp_path):
    bind(tmp_path, "train", {"a": 1}, fix="f")
    assert bind(tmp_path, "reproduce", {"a": 2}, fix="f") is False
    assert set(json.loads((tmp_path / MANIFEST).read_text())) == {"train", "reproduce"}


def test_damaged_manifest_is_one_line(tmp_path):
    (tmp_path / MANIFEST).write_text("{trunc")
    with pytest.raises(OutputMismatchError, match="manifest.json: unreadable"):
        bind(tmp_path, "train", {}, fix="f")


def test_differences_nested():
    assert differences({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 1, "c": [1, 3]}}) == ["a.c: [1, 2] -> [1, 3]"]
    assert differences({"a": 1}, {"a": 1}) == []
