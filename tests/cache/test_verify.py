"""`pipeline cache verify | push | pull`: a partial store is healthy, a lost sample is not, --repair makes the
same extract command recompute exactly the lost ones."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from hairdiff.cache import FeatureStore
from tests.fixtures.cli import invoke
from tests.fixtures.layouts import make_figaro


def extract(root, cache, *extra):
    return invoke("extract", "--dataset", "figaro", "--root", root, "--split", "Testing", "--model", "tiny",
                  "--resolution", "64", "--shard-size", "2", "--workers", "0", "--batch-size", "2",
                  "--cache-root", cache, *extra)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def flip_chunk(shard: Path, chunk: int, per_shard: int = 2) -> None:
    """Flip a byte inside one chunk of a shard file (its index at the end: (offset, nbytes) pairs + crc32c)."""
    raw = bytearray(shard.read_bytes())
    n = per_shard
    index = np.frombuffer(bytes(raw[-(16 * n + 4):-4]), "<u8").reshape(n, 2)
    offset, nbytes = (int(v) for v in index[chunk])
    raw[offset + nbytes // 2] ^= 0x40
    shard.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """A store of 8 Figaro-layout samples of which the first 5 are extracted (`--limit 5`), and a pristine copy."""
    tmp = tmp_path_factory.mktemp("verify")
    root = make_figaro(tmp / "figaro", split="Testing", frames=range(1, 9))
    code, out, err = extract(root, tmp / "cache", "--limit", "5")
    assert code == 0, err
    return root, tmp / "cache", out.strip().splitlines()[-1]


def copy_of(store: str, dest: Path) -> str:
    shutil.copytree(store, dest)
    return str(dest)


def test_a_partial_store_passes_and_says_how_far_it_is(partial, tmp_path):
    _, _, store = partial
    code, out, err = invoke("cache", "verify", store)
    assert code == 0 and not err, err
    assert out.strip() == f"{store}: 5 of 8 samples done and readable, 3 not extracted yet, 0 corrupt"
    code, out, err = invoke("cache", "verify", store, "--complete")
    assert code == 1, err
    assert "--complete: 3 of 8 samples" in one_error_line(err) and "without --limit" in err
    # push and pull of a healthy partial store succeed and print where the copy landed, last
    code, out, err = invoke("cache", "push", store, tmp_path / "pushed.zarr")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(tmp_path / "pushed.zarr")
    code, out, err = invoke("cache", "pull", store, tmp_path / "root")
    assert code == 0, err
    landed = out.strip().splitlines()[-1]
    assert landed == str(tmp_path / "root" / "figaro" / "Testing" / Path(store).name)
    assert FeatureStore.open(landed).done_mask().sum() == 5
    code, out, _ = invoke("cache", "ls", "--cache-root", tmp_path / "root")
    assert code == 0 and out.splitlines()[0] == f"1 feature store(s) under {tmp_path / 'root'}:"
    assert out.strip().splitlines()[-1].endswith(f"  {landed}")  # the full path, never cut


def test_corrupt_samples_fail_and_repair_recomputes_exactly_those(partial, tmp_path):
    root, _, pristine = partial
    store = copy_of(pristine, tmp_path / "store.zarr")
    key = next(iter(zarr.open_group(store, mode="r")["features"].array_keys()))
    flip_chunk(Path(store) / "features" / key / "c" / "0" / "0" / "0" / "0", chunk=1)  # sample 1 only
    (Path(store) / "labels" / "c" / "2").unlink()  # the labels of samples 4 and 5 (only 4 is done)
    ids = FeatureStore.open(store).ids

    code, out, err = invoke("cache", "verify", store)
    assert code == 1
    assert "3 of 8 samples done and readable, 3 not extracted yet, 2 corrupt" in out
    assert f"corrupt: sample 1 ({ids[1]}): features/{key}: " in out
    assert f"corrupt: sample 4 ({ids[4]}): labels: chunk file missing (labels/c/2)" in out
    assert "--repair" in one_error_line(err)

    code, out, err = invoke("cache", "verify", store, "--repair")
    assert code == 0, err
    assert f"cleared the done flags of 2 corrupt sample(s) ({ids[1]}, {ids[4]})" in out
    assert "same `pipeline extract` command" in out
    assert FeatureStore.open(store).done_mask().tolist() == [True, False, True, True, False, False, False, False]
    code, out, _ = invoke("cache", "verify", store)
    assert code == 0 and "3 of 8 samples done and readable, 5 not extracted yet, 0 corrupt" in out

    # The same extract command (into the store's cache root) recomputes exactly the two, bit for bit.
    cache = tmp_path / "cache"
    (cache / "figaro" / "Testing").mkdir(parents=True)
    Path(store).rename(cache / "figaro" / "Testing" / Path(pristine).name)
    code, out, err = extract(root, cache, "--limit", "5")
    assert code == 0 and "computed 2, reused 3" in err, err
    a, b = zarr.open_group(out.strip().splitlines()[-1], mode="r"), zarr.open_group(pristine, mode="r")
    assert np.array_equal(a["done"][:], b["done"][:])
    for k in a["features"].array_keys():
        x, y = a["features"][k][:5].astype(np.float32), b["features"][k][:5].astype(np.float32)
        assert np.array_equal(x[[0, 2, 3]], y[[0, 2, 3]])  # kept through the shard rewrites as they were
        # recomputed in another batch than the first time: equal up to float rounding
        np.testing.assert_allclose(x[[1, 4]], y[[1, 4]], rtol=1e-3, atol=1e-3)
    assert list(a["labels"][:5]) == list(b["labels"][:5])


def test_non_finite_and_lost_shards_are_corrupt_and_repair_clears_them(partial, tmp_path):
    _, _, pristine = partial
    store = copy_of(pristine, tmp_path / "store.zarr")
    s = FeatureStore.open(store, mode="r+")
    key = s.levels[0].key
    feats = {k: v[None].copy() for k, v in s.read_sample(2)["features"].items()}
    feats[s.levels[0].name][0, 0, 0, 0] = np.inf  # written by the store: every checksum is right, the value is not
    s.write_samples([2], feats, s.read_sample(2)["mask"][None], [s.read_label(2)], [s.read_sample(2)["orig_size"]])
    g = zarr.open_group(store, mode="r+")
    changed = g["features"][s.levels[1].key][3]
    changed[0, 0, 0] += 1  # written behind the store's back: its chunk checksum is right, its digest not
    g["features"][s.levels[1].key][3] = changed
    (Path(store) / "masks" / "c" / "0" / "0" / "0").unlink()  # shard 0: samples 0 and 1
    flags = Path(store) / "done" / "c" / "2"  # the done flags of samples 4 and 5
    flags.write_bytes(bytes([flags.read_bytes()[0] ^ 1]) + flags.read_bytes()[1:])
    code, out, _ = invoke("cache", "verify", store, "--json")
    assert code == 1
    report = json.loads(out)
    bad = {r["index"]: r["problems"] for r in report["corrupt"]}
    assert sorted(bad) == [0, 1, 2, 3, 4, 5] and not report["ok"] and not report["complete"]
    assert bad[0] == ["masks: shard file missing (masks/c/0/0/0)"]
    assert bad[2] == [f"features/{key}: non-finite values"]
    assert bad[3][0].startswith(f"features/{s.levels[1].key}: does not match its checksum")
    assert bad[4][0].startswith("done: flags unreadable") and bad[5] == bad[4]
    assert [r["index"] for r in report["not_extracted"]] == [6, 7] and report["readable"] == 0
    code, out, _ = invoke("cache", "verify", store, "--repair", "--complete")
    assert code == 1  # repaired, but --complete still wants every sample
    assert not FeatureStore.open(store).done_mask().any()



# ---------------------------------------------------------------- the store's identity (issue 18, case 3)
def _verify_json(store) -> tuple[int, dict]:
    code, out, err = invoke("cache", "verify", store, "--json")
    return code, json.loads(out)


def test_every_kind_of_store_verifies_clean_under_any_name(tmp_path):
    """No false alarm: views, int8 and an --ids selection are recorded consistently; a copy under a name of
    the user's choosing has no name to compare, a copy into a cache root is named as extract names it."""
    root = make_figaro(tmp_path / "F", "Testing", frames=(1, 2, 3))
    (tmp_path / "ids.txt").write_text("Frame00001\nFrame00003\n")
    code, out, err = extract(root, tmp_path / "c", "--views", "flip", "--precision", "int8", "--ids",
                             tmp_path / "ids.txt")
    assert code == 0, err
    store = out.strip().splitlines()[-1]
    for target in (store, tmp_path / "copy.zarr", tmp_path / "root"):
        if target != store:
            code, out, err = invoke("cache", "push", store, target)
            assert code == 0, err
            target = out.strip().splitlines()[-1]
        code, report = _verify_json(target)
        assert code == 0 and report["damaged"] == [] and report["ok"], report


def test_attributes_that_disagree_are_damage_each_named(tmp_path):
    from hairdiff.cache.verify import identity_problems

    root = make_figaro(tmp_path / "F", "Testing", frames=(1, 2))
    code, out, err = extract(root, tmp_path / "c", "--views", "flip")
    assert code == 0, err
    store = Path(out.strip().splitlines()[-1])
    meta = json.loads((store / "zarr.json").read_text())
    a = meta["attributes"]
    a["resolution"] = 128  # recorded twice: in the attributes and in the fingerprint inputs
    a["views"]["names"] = ["original", "scale:0.5"]
    a["preprocessing"]["image_pad"] = 1
    (store / "zarr.json").write_text(json.dumps(meta))
    problems = [p["problem"] for p in identity_problems(FeatureStore.open(store))]
    assert any("fingerprint_inputs.resolution is 64 but the store holds 128" in p for p in problems), problems
    assert any("fingerprint_inputs.preprocessing is" in p for p in problems), problems
    assert any("views attribute" in p for p in problems), problems
    code, report = _verify_json(store)
    assert code == 1 and len(report["damaged"]) == len(problems) and not report["ok"]
