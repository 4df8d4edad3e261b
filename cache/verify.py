"""Tell a store's samples apart: done and readable, not extracted yet, or corrupt; and repair the corrupt ones.

- not extracted: never flagged done. A partial store (`pipeline extract --limit`, an interrupted run) is
  healthy: the same command computes the rest.
- damaged: the store as a whole cannot be trusted: a metadata file (the group's or an array's zarr.json) is
  missing or does not decode (found when the store opens, see `open_checked`), or its attributes disagree
  with each other or with its name: the fingerprint is recomputed from `fingerprint_inputs` and compared with
  the `fingerprint` attribute and with the store's name (`<fingerprint16>-<data12>.zarr`, which also carries
  the data key), and the settings recorded twice (resolution, preprocessing, precision, taps, views) must agree.
- corrupt: flagged done, but a file that holds it is absent (zarr 3.1 reads a missing shard or chunk back
  as fill values without an error, so presence is checked against a listing of each array), a read fails
  (crc32c mismatch, an undecodable chunk, the store's own per-sample checks), or it holds non-finite
  features, a label of another size than recorded, or mask values other than 0, 1 and 255.

`repair` clears the done flags of exactly the corrupt samples and makes their chunks readable again, so the
same `pipeline extract` command recomputes exactly those (it rereads the rest of each shard it rewrites).
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from hairdiff.cache.fingerprint import fingerprint
from hairdiff.core.errors import CorruptSampleError, ReadOnlyStoreError, StoreMetadataError
from hairdiff.core.labels import IGNORE
from hairdiff.core.urls import filesystem

# The name cache/location.py gives a store: <fingerprint16>[-<data key 12>].zarr
_NAME = re.compile(r"^(?P<fp>[0-9a-f]{16})(?:-(?P<data>[0-9a-f]{12}))?\.zarr$")


def open_checked(url: str, mode: str = "r"):
    """(FeatureStore, []) or, when its metadata is damaged, (None, [{"file", "problem"}, ...])."""
    from hairdiff.cache.store import FeatureStore

    try:
        return FeatureStore.open(url, mode=mode), []
    except StoreMetadataError as e:
        return None, [{"file": f, "problem": why} for f, why in e.problems]


def damaged_report(url: str, damaged: list[dict]) -> dict:
    """verify's report for a store that could not be opened: nothing in it was read."""
    return {"url": str(url), "ok": False, "complete": False, "damaged": damaged, "num_samples": None, "done": 0,
            "readable": 0, "corrupt": [], "not_extracted": []}


def identity_problems(store) -> list[dict]:
    """Attributes that disagree with each other or with the store's name, each {"file", "problem"}."""
    a, inputs = store.attrs, store.fingerprint_inputs
    meta = f"{store.url.rstrip('/')}/zarr.json"
    out = []

    def problem(what: str, file: str = meta) -> None:
        out.append({"file": file, "problem": what})

    if not isinstance(inputs, dict):
        problem(f"fingerprint_inputs is a {type(inputs).__name__}, not a record of settings")
        return out
    recomputed = fingerprint(inputs)
    if recomputed != store.fingerprint:
        problem(f"the fingerprint attribute {str(store.fingerprint)[:16]} is not the hash of its fingerprint_inputs "
                f"({recomputed[:16]}): one of them was changed after the store was written")
    name = store.url.rstrip("/").rsplit("/", 1)[-1]
    m = _NAME.match(name)
    if m:  # a store copied to a name of the user's choosing (`cache push ... DEST.zarr`) has no name to compare
        for what, value in (("fingerprint attribute", store.fingerprint), ("recomputed fingerprint", recomputed)):
            if m["fp"] != str(value)[:16]:
                problem(f"the store's name says fingerprint {m['fp']}, its {what} is {str(value)[:16]}", store.url)
                break
        key = (store.data_key or "")[:12] or None
        if m["data"] != key:
            problem(f"the store's name says data key {m['data']}, its data_key attribute is {key}", store.url)
    settings = {"resolution": store.resolution, "preprocessing": a.get("preprocessing"),
                "store_precision": store.precision, "taps": [lv.name for lv in store.levels]}
    for key, value in settings.items():
        if key in inputs and inputs[key] != value:
            problem(f"fingerprint_inputs.{key} is {inputs[key]!r} but the store holds {value!r}")
    views, recorded = store.views, inputs.get("views")
    names = list(views.get("names", []))[1:] if views else []
    if bool(views) != bool(recorded) or (views and names != list(recorded.get("recipe", []))):
        problem(f"the views attribute ({views}) disagrees with fingerprint_inputs.views ({recorded})")
    elif views and store.num_samples != store.num_images * len(views["names"]):
        problem(f"{store.num_samples} samples are not {store.num_images} images x {len(views['names'])} views")
    return out


def _sample_arrays(store) -> list[str]:
    """Every array that holds a part of each sample (ids are checked when the store opens)."""
    paths = [f"features/{lv.key}" for lv in store.levels]
    if store.precision == "int8":
        paths += [f"features/{lv.key}__{part}" for lv in store.levels for part in ("scale", "offset")]
    return paths + ["masks", "labels", "orig_sizes", "label_sizes"]


def _arrays(store) -> dict:
    """The per-sample arrays, opened once (each `group[path]` reads metadata: a request on object stores)."""
    return {p: store.group[p] for p in _sample_arrays(store)}


def _storage_key(arrays: dict, path: str, i: int) -> str:
    """The file that holds sample i of an array: its shard file, or the chunk of shard_size samples."""
    arr = arrays[path]
    outer = arr.shards or arr.chunks
    return "/".join([path, "c", str(i // outer[0])] + ["0"] * (arr.ndim - 1))


def _listing(store, paths: list[str]) -> set[str]:
    """Keys (relative to the store) of every chunk file of these arrays: one listing per array, not one
    existence check per file (object stores bill requests)."""
    fs, base = filesystem(store.url)
    base = base.rstrip("/")
    keys = set()
    for path in paths:
        try:
            found = fs.find(f"{base}/{path}/c")
        except FileNotFoundError:
            found = []
        keys.update(f[len(base) + 1:] if f.startswith(base) else f for f in found)
    return keys


def _done_flags(store) -> tuple[np.ndarray, dict[int, str]]:
    """Done flags shard by shard, so one unreadable flag chunk does not hide the others."""
    done = np.zeros(store.num_samples, bool)
    unreadable = {}
    arr = store.group["done"]
    for k in range(store.num_shards):
        rng = store.shard_range(k)
        try:
            done[rng.start:rng.stop] = np.asarray(arr[rng.start:rng.stop]).astype(bool)
        except Exception as e:  # checksum mismatch or undecodable chunk
            unreadable[k] = f"done: flags unreadable ({type(e).__name__}: {e})"[:200]
    return done, unreadable


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"[:200]


def _read_problems(store, i: int, arrays: dict) -> list[str]:
    """Read sample i through the store's own readers (and their checks); on failure, name the array."""
    try:
        sample = store.read_sample(i)
        label = store.read_label(i)
        recorded = tuple(int(v) for v in arrays["label_sizes"][i])
    except CorruptSampleError as e:  # the store's own checks (per-sample digests) name the part
        return [e.part]
    except Exception as e:
        named = []
        for path, arr in arrays.items():
            try:
                arr[i]
            except Exception as part:
                named.append(f"{path}: {_why(part)}")
        return named or [_why(e)]
    problems = [f"features/{lv.key}: non-finite values" for lv in store.levels
                if not np.isfinite(np.asarray(sample["features"][lv.name], dtype=np.float32)).all()]
    if label.shape[:2] != recorded:
        problems.append(f"labels: {label.shape[1]}x{label.shape[0]} but recorded as {recorded[1]}x{recorded[0]}")
    if not np.isin(sample["mask"], (0, 1, IGNORE)).all():
        problems.append("masks: values other than 0, 1 and 255")
    if min(sample["orig_size"]) < 1:
        problems.append(f"orig_sizes: {sample['orig_size']} (no image size recorded)")
    return problems


def verify(store) -> dict:
    """Check every sample flagged done, and the store's attributes against each other and its name.
    ok: nothing corrupt or damaged (a partial store is ok); complete: ok and every sample extracted."""
    done, unreadable = _done_flags(store)
    arrays = _arrays(store)
    present = _listing(store, list(arrays))
    corrupt: dict[int, list[str]] = {}
    for k in range(store.num_shards):
        rng = store.shard_range(k)
        if k in unreadable:
            for i in rng:
                corrupt[i] = [unreadable[k]]
            continue
        for i in (i for i in rng if done[i]):
            absent = [f"{p}: {'shard' if a.shards else 'chunk'} file missing ({_storage_key(arrays, p, i)})"
                      for p, a in arrays.items() if _storage_key(arrays, p, i) not in present]
            # An absent file reads back as fill values: reading would only add noise to the report.
            problems = absent or _read_problems(store, i, arrays)
            if problems:
                corrupt[i] = problems
    ids = store.ids
    bad = [{"index": i, "id": ids[i], "problems": p} for i, p in sorted(corrupt.items())]
    not_extracted = [{"index": int(i), "id": ids[int(i)]} for i in np.flatnonzero(~done) if int(i) not in corrupt]
    damaged = identity_problems(store)
    if len(set(ids)) != len(ids):
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
        damaged.append({"file": f"{store.url.rstrip('/')}/ids", "problem": f"ids repeated: {', '.join(twice)}"})
    ok = not bad and not damaged
    return {"url": store.url, "ok": ok, "complete": ok and not not_extracted, "damaged": damaged,
            "digests": store.has_digests,
            "num_samples": store.num_samples, "done": int(done.sum()),
            "readable": int(done.sum()) - int(sum(done[i] for i in corrupt)),
            "corrupt": bad, "not_extracted": not_extracted}


def repair(store, report: dict) -> list[int]:
    """Clear the done flags of the corrupt samples in `report`, then make their chunks readable again
    (fill values) so the next extraction can rewrite their shards. Returns the indices cleared."""
    if not store.writable:
        raise ReadOnlyStoreError(f"{store.url} is open read-only: open it with mode='r+' to repair it")
    bad = sorted({int(r["index"]) for r in report["corrupt"]})
    if not bad:
        return []
    shards: dict[int, list[int]] = {}
    for i in bad:
        shards.setdefault(store.shard_of(i), []).append(i)
    flags = store.group["done"]
    # Flags first: a sample flagged done must read back exactly, even if what follows is cut short.
    for k, idx in shards.items():
        rng = store.shard_range(k)
        try:
            cur = np.asarray(flags[rng.start:rng.stop]).astype(np.uint8)
        except Exception:  # unreadable flags: every sample of the shard is recomputed
            cur = np.zeros(len(rng), np.uint8)
        cur[np.asarray(idx) - rng.start] = 0
        flags[rng.start:rng.stop] = cur
    still_done = store.done_mask()
    fs, base = filesystem(store.url)
    arrays = _arrays(store)
    for path, arr in arrays.items():
        for i in bad:
            try:
                arr[i]
                continue
            except Exception:  # (any decoding error) this sample's chunk of `path` is damaged: mend it below
                pass
            try:
                arr[i] = arr.fill_value  # one chunk of a shard: zarr rewrites it without decoding the others
                continue
            except Exception:  # (any decoding error) the shard file itself is unreadable: deleted below
                pass
            # The file itself is unreadable (a shard index, a whole-shard chunk): every done sample in it
            # was reported corrupt and cleared above, so deleting it loses nothing.
            rng = store.shard_range(store.shard_of(i))
            if not still_done[rng.start:rng.stop].any():
                fs.rm(f"{base.rstrip('/')}/{_storage_key(arrays, path, i)}")
    return bad
