"""Issue 26, class 12: `#` in ids files. A comment is a line of its own; `#` elsewhere is part of an id, and an
id that starts with `#` is written `\\#id`. What reaches the store is checked, through the real command."""
from __future__ import annotations

import pytest

from hairdiff.core.errors import DatasetError
from hairdiff.extract.readers.ids import id_line, parse_id_line, read_ids_file
from hairdiff.extract.readers.registry import get_reader
from tests.fixtures.cli import invoke
from tests.fixtures.layouts import make_folder


def test_hash_inside_an_id_is_part_of_it_and_a_leading_one_is_escaped(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_text("# a comment\n   # an indented comment\nphoto #2\n\\#1\n\\\\back\nplain\n")
    assert read_ids_file(p) == ["photo #2", "#1", "\\back", "plain"]
    for sample_id in ("photo #2", "#1", "\\back", "plain", "a#b"):  # what reproduce writes reads back the same
        assert parse_id_line(id_line(sample_id)) == sample_id


def test_an_unknown_id_holding_hash_says_comments_go_on_their_own_line(tmp_path):
    root = make_folder(tmp_path / "data", stems=("a", "b"))
    with pytest.raises(DatasetError, match="put comments on lines of their own"):
        get_reader("folder").list_samples(root, "all", ["a  # the first one"])


def test_extract_lists_an_image_whose_name_holds_hash(tmp_path, monkeypatch):
    from hairdiff.cache import FeatureStore

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = make_folder(tmp_path / "data", stems=("photo #2", "#1", "c"), size=(16, 16))
    ids = tmp_path / "ids.txt"
    ids.write_text("# the two with hashes\nphoto #2\n\\#1\n")
    code, out, err = invoke("extract", "--dataset", "folder", "--root", root, "--model", "tiny", "--resolution", "64",
                            "--workers", "0", "--cache-root", tmp_path / "cache", "--ids", ids)
    assert code == 0, err
    store = FeatureStore.open(out.strip().splitlines()[-1])
    assert sorted(store.ids) == ["#1", "photo #2"] and store.done_mask().all()
