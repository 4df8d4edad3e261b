"""cache/distinct.py on its own: where a store is, which images two stores share, remote locations."""
from __future__ import annotations

import pytest

from hairdiff.cache.distinct import check_distinct, enclosing_store, ids_overlap, same_location, shared_images
from hairdiff.core.errors import PathClashError


def test_a_store_is_a_zarr_folder_or_a_zarr_group_existing_or_not(tmp_path):
    group = tmp_path / "plain-name"
    group.mkdir()
    (group / "zarr.json").write_text("{}")
    assert enclosing_store(group / "a" / "b") == str(group)  # a Zarr group whatever its name
    assert enclosing_store(tmp_path / "later.zarr" / "eval") == str(tmp_path / "later.zarr")  # not made yet
    assert enclosing_store(tmp_path / "eval") is None
    (tmp_path / "link").symlink_to(group)
    assert enclosing_store(tmp_path / "link" / "x") == str(group)  # by real path
    remote = "s3://bucket/root/figaro/Training/abc.zarr"
    assert enclosing_store(f"{remote}/out") == remote
    assert enclosing_store("s3://bucket/root/out") is None
    assert same_location("s3://b/x.zarr/", "s3://b/x.zarr") and not same_location("s3://b/x.zarr", "s3://b/y.zarr")


def record(ids, data_key="k1", root="/data", split="all", dataset="folder", url="u"):
    return {"ids": list(ids), "data_key": data_key, "root": root, "split": split, "dataset": dataset, "url": url}


def test_shared_images_by_data_key_or_by_ids_of_one_root_and_split():
    assert shared_images(record("ab"), record("ab", root="/elsewhere")) == ["a", "b"]  # the same files
    assert shared_images(record("abc", "k1"), record("cb", "k2")) == ["b", "c"]  # an --ids subset
    assert shared_images(record("abc", "k1"), record("abc", "k2", split="test")) == []  # another split's a, b, c
    assert shared_images(record("abc", "k1"), record("abc", "k2", root="/other")) == []
    assert shared_images(record("ab", None), record("cd", None)) == []  # no data key recorded: ids decide


def test_ids_overlap_names_both_lists_and_the_ids():
    ids_overlap(("train.txt", ["a", "b"]), ("test.txt", ["c"]))
    with pytest.raises(PathClashError, match=r"train.txt and test.txt share 4 id\(s\) \('b', 'c', 'd' and 1 more\)"):
        ids_overlap(("train.txt", ["a", "b", "c", "d", "e"]), ("test.txt", ["e", "d", "c", "b"]))


def test_an_output_may_not_be_an_input_folder_or_hold_a_copy_of_its_store(tmp_path):
    with pytest.raises(PathClashError, match="is the folder"):
        check_distinct(outputs={"--out": tmp_path / "in" / ".." / "in"}, inputs={"IMAGES": [tmp_path / "in"]})
    check_distinct(outputs={"--out": tmp_path / "in" / "sub"}, inputs={"IMAGES": [tmp_path / "in"]})
    with pytest.raises(PathClashError, match="holds the store"):
        check_distinct(copy=(str(tmp_path / "c" / "s.zarr"), str(tmp_path / "c")))
    check_distinct(copy=(str(tmp_path / "a" / "s.zarr"), str(tmp_path / "b" / "s.zarr")))
