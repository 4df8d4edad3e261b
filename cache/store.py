"""The feature store: one Zarr v3 group per (dataset, split, fingerprint).

Layout: ``features/<level>`` [N, C, H, W] float16 (or int8 + ``features/<level>__scale``/``__offset``
[N, C] float32), one sample per chunk, ``shard_size`` samples per shard file; ``masks`` [N, R, R] uint8
(training masks at feature-input resolution, 255 = ignore); ``labels`` [N] PNG bytes (the annotation at
its own resolution, exact); ``ids`` [N] str; ``orig_sizes``/``label_sizes`` [N, 2] int32; ``done`` [N]
uint8 chunked by shard.

Crash-safety invariant: a sample flagged done always reads back exactly. Shards are written whole
(zarr's LocalStore writes a key through a temporary file and a rename, object stores replace objects
whole), and done flags are written after the data. Rewriting a shard that already holds done samples
first clears their flags, so a crash in between leaves them missing (recomputed), never wrong.
"""
from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

import numpy as np
import zarr
from PIL import Image

from hairdiff.cache.codecs import checksum_only, feature_compressors, small_compressors
from hairdiff.core.errors import (ReadOnlyStoreError, SchemaVersionError, StoreMismatchError, StoreNotFoundError,
                                  UsageError)
from hairdiff.cache.fingerprint import SCHEMA_VERSION
from hairdiff.cache.levels import LevelSpec
from hairdiff.core.labels import IGNORE
from hairdiff.core.urls import filesystem, is_remote, local_path
from hairdiff.core.versions import versions

PRECISIONS = ("fp16", "int8")  # stored precision of features

warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")


def _zarr_store(url: str, read_only: bool):
    if is_remote(url):
        return zarr.storage.FsspecStore.from_url(url, read_only=read_only)
    return zarr.storage.LocalStore(local_path(url), read_only=read_only)


def _png(label: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class FeatureStore:
    def __init__(self, url: str, group: zarr.Group, writable: bool):
        self.url, self.group, self.writable = str(url), group, writable
        a = dict(group.attrs)
        self.attrs = a
        self.fingerprint: str = a["fingerprint"]
        self.fingerprint_inputs: dict = a["fingerprint_inputs"]
        self.dataset: str = a["dataset"]
        self.split: str = a["split"]
        self.ids_digest: str | None = a.get("ids_digest")
        if self.ids_digest is None and "-ids-" in self.split:  # stores written before ids_digest was an attribute
            self.split, self.ids_digest = self.split.rsplit("-ids-", 1)
        self.root: str = a["root"]
        self.resolution: int = a["resolution"]
        self.precision: str = a.get("precision", "fp16")
        self.shard_size: int = a["shard_size"]
        self.levels = [LevelSpec(**d) for d in a["levels"]]
        self.num_samples: int = a["num_samples"]
        self._ids: list[str] | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, url: str, mode: str = "r") -> "FeatureStore":
        if mode not in ("r", "r+"):
            raise ValueError(f"mode {mode!r}: use 'r' (read-only) or 'r+'")
        url = str(url)
        try:
            group = zarr.open_group(_zarr_store(url, read_only=mode == "r"), mode=mode)
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as e:
            raise StoreNotFoundError(f"no feature store at {url}: run `pipeline extract` first, or check the "
                                     "path (`pipeline cache ls` lists stores)") from e
        version = group.attrs.get("schema_version")
        if version is None or "fingerprint" not in group.attrs:
            raise StoreNotFoundError(f"{url} is a Zarr group but not a hairdiff feature store")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(f"{url} was written by a newer hairdiff (store schema {version}, this one "
                                     f"reads up to {SCHEMA_VERSION}): upgrade hairdiff to read it")
        return cls(url, group, writable=mode == "r+")

    @classmethod
    def create_or_open(cls, url: str, *, fingerprint: str, fingerprint_inputs: dict, dataset: str, split: str,
                       root: str, ids: list[str], levels: list[LevelSpec], resolution: int, preprocessing: dict,
                       precision: str = "fp16", shard_size: int = 16, ids_digest: str | None = None) -> "FeatureStore":
        url = str(url)
        if precision not in PRECISIONS:
            raise UsageError(f"--precision {precision!r}: use {' or '.join(PRECISIONS)}")
        try:
            store = cls.open(url, mode="r+")
        except StoreNotFoundError:
            store = None
        if store is not None:
            if store.fingerprint != fingerprint:
                raise StoreMismatchError(
                    f"{url} holds features with fingerprint {store.fingerprint[:16]}, not {fingerprint[:16]}: "
                    "pass another --cache-root, or delete that store to rebuild it")
            if store.ids != list(ids):
                raise StoreMismatchError(f"{url} holds another sample list ({store.num_samples} samples, not "
                                         f"{len(ids)}): the dataset changed on disk; delete the store to rebuild it")
            return store
        return cls._create(url, fingerprint, fingerprint_inputs, dataset, split, root, list(ids), levels,
                           resolution, preprocessing, precision, shard_size, ids_digest)

    @classmethod
    def _create(cls, url, fp, inputs, dataset, split, root, ids, levels, resolution, preprocessing, precision,
                shard_size, ids_digest) -> "FeatureStore":
        n, s = len(ids), shard_size
        zs = _zarr_store(url, read_only=False)
        g = zarr.open_group(zs, mode="a")
        for lv in levels:
            dtype = "int8" if precision == "int8" else "float16"
            g.create_array(f"features/{lv.key}", shape=(n, lv.channels, lv.height, lv.width), dtype=dtype,
                           chunks=(1, lv.channels, lv.height, lv.width), shards=(s, lv.channels, lv.height, lv.width),
                           compressors=feature_compressors(), fill_value=0, overwrite=True,
                           attributes={"tap": lv.name, "stride": lv.stride})
            if precision == "int8":
                for part in ("scale", "offset"):
                    g.create_array(f"features/{lv.key}__{part}", shape=(n, lv.channels), dtype="float32",
                                   chunks=(s, lv.channels), compressors=checksum_only(), fill_value=0, overwrite=True)
        g.create_array("masks", shape=(n, resolution, resolution), dtype="uint8", chunks=(1, resolution, resolution),
                       shards=(s, resolution, resolution), compressors=small_compressors(), fill_value=IGNORE,
                       overwrite=True)
        from zarr.core.dtype import VariableLengthBytes

        g.create_array("labels", shape=(n,), dtype=VariableLengthBytes(), chunks=(s,), compressors=checksum_only(),
                       overwrite=True)
        for name in ("orig_sizes", "label_sizes"):
            g.create_array(name, shape=(n, 2), dtype="int32", chunks=(s, 2), compressors=checksum_only(),
                           fill_value=0, overwrite=True)
        g.create_array("done", shape=(n,), dtype="uint8", chunks=(s,), compressors=checksum_only(), fill_value=0,
                       overwrite=True)
        ids_arr = g.create_array("ids", shape=(n,), dtype=str, chunks=(max(1, n),), compressors=checksum_only(),
                                 overwrite=True)
        ids_arr[:] = np.array(ids, dtype=object)
        # Attributes last: a store without them is not a store yet, so a crash here just recreates it.
        g.attrs.update({
            "schema_version": SCHEMA_VERSION, "fingerprint": fp, "fingerprint_inputs": inputs, "dataset": dataset,
            "split": split, "ids_digest": ids_digest, "root": str(root), "levels": [lv.to_dict() for lv in levels], "resolution": resolution,
            "preprocessing": preprocessing, "precision": precision, "shard_size": s, "num_samples": n,
            "versions": versions(("zarr", "numcodecs", "numpy", "torch")), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        return cls.open(url, mode="r+")

    # ------------------------------------------------------------------ bookkeeping
    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = [str(x) for x in self.group["ids"][:]]
        return self._ids

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_of(self, index: int) -> int:
        return int(index) // self.shard_size

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.num_samples))

    def done_mask(self) -> np.ndarray:
        return self.group["done"][:].astype(bool)

    def missing_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.done_mask())

    def level(self, name: str) -> LevelSpec:
        for lv in self.levels:
            if lv.name == name or lv.key == name:
                return lv
        raise KeyError(f"{self.url} has no level {name!r}; levels: {[lv.name for lv in self.levels]}")

    @contextmanager
    def claim(self, k: int) -> Iterator[bool]:
        from hairdiff.cache.claims import shard_claim

        with shard_claim(self.url, k) as ok:
            yield ok

    # ------------------------------------------------------------------ writing
    def _require_writable(self):
        if not self.writable:
            raise ReadOnlyStoreError(f"{self.url} is open read-only: open it with mode='r+' to write")

    def write_samples(self, indices, features: dict, masks: np.ndarray, labels: list, orig_sizes) -> None:
        self._require_writable()
        indices = np.asarray(indices, dtype=np.int64)
        shards = {self.shard_of(i) for i in indices}
        if len(shards) != 1:
            raise ValueError(f"write_samples takes indices of one shard, got shards {sorted(shards)}")
        k = shards.pop()
        rng = self.shard_range(k)
        lo, hi = rng.start, rng.stop
        done = self.group["done"][lo:hi].astype(bool)
        pos = indices - lo
        keep = done.copy()
        keep[pos] = False  # samples rewritten now
        # Start from what the shard holds (its done samples are kept), then clear their flags before rewriting.
        region = {lv.key: (self._read_region(lv, lo, hi) if keep.any() else None) for lv in self.levels}
        mask_region = self.group["masks"][lo:hi] if keep.any() else np.full((hi - lo, self.resolution, self.resolution),
                                                                            IGNORE, np.uint8)
        if done.any():
            self.group["done"][lo:hi] = np.zeros(hi - lo, np.uint8)
        by_key = {}
        for name, arr in features.items():
            by_key[self.level(name).key] = arr
        for lv in self.levels:
            data = region[lv.key]
            if data is None:
                data = np.zeros((hi - lo, lv.channels, lv.height, lv.width), np.float32)
            data = data.astype(np.float32)
            data[pos] = by_key[lv.key]
            self._write_region(lv, lo, hi, data)
        mask_region = mask_region.copy()
        mask_region[pos] = masks
        self.group["masks"][lo:hi] = mask_region
        lab = self.group["labels"][lo:hi] if keep.any() else np.full(hi - lo, b"", dtype=object)
        lab = np.asarray(lab, dtype=object)
        for j, p in enumerate(pos):
            lab[p] = _png(labels[j])
        self.group["labels"][lo:hi] = lab
        sizes = np.asarray(orig_sizes, dtype=np.int32).reshape(-1, 2)
        os_ = self.group["orig_sizes"][lo:hi]
        ls_ = self.group["label_sizes"][lo:hi]
        os_[pos] = sizes
        ls_[pos] = np.array([lb.shape[:2] for lb in labels], dtype=np.int32)
        self.group["orig_sizes"][lo:hi] = os_
        self.group["label_sizes"][lo:hi] = ls_
        new_done = keep.copy()
        new_done[pos] = True
        self.group["done"][lo:hi] = new_done.astype(np.uint8)  # last: data first, then the flag

    def _write_region(self, lv: LevelSpec, lo: int, hi: int, data: np.ndarray) -> None:
        arr = self.group[f"features/{lv.key}"]
        if self.precision == "fp16":
            arr[lo:hi] = data.astype(np.float16)
            return
        # int8: per-sample, per-channel affine quantisation over the channel's range
        flat = data.reshape(data.shape[0], data.shape[1], -1)
        mn, mx = flat.min(-1), flat.max(-1)
        scale = np.maximum(mx - mn, 1e-12) / 254.0
        offset = (mx + mn) / 2.0
        q = np.clip(np.rint((data - offset[..., None, None]) / scale[..., None, None]), -127, 127).astype(np.int8)
        arr[lo:hi] = q
        self.group[f"features/{lv.key}__scale"][lo:hi] = scale.astype(np.float32)
        self.group[f"features/{lv.key}__offset"][lo:hi] = offset.astype(np.float32)

    def _read_region(self, lv: LevelSpec, lo: int, hi: int) -> np.ndarray:
        return self._read_level(lv, slice(lo, hi))

    # ------------------------------------------------------------------ reading
    def _read_level(self, lv: LevelSpec, sel) -> np.ndarray:
        def get(a):
            return a.get_orthogonal_selection((sel,)) if isinstance(sel, np.ndarray) else a[sel]

        raw = get(self.group[f"features/{lv.key}"])
        if self.precision == "fp16":
            return raw
        scale = get(self.group[f"features/{lv.key}__scale"])
        offset = get(self.group[f"features/{lv.key}__offset"])
        return (raw.astype(np.float32) * scale[..., None, None] + offset[..., None, None]).astype(np.float16)

    def read_sample(self, i: int) -> dict:
        i = int(i)
        return {
            "id": self.ids[i],
            "features": {lv.name: self._read_level(lv, i) for lv in self.levels},
            "mask": self.group["masks"][i],
            "orig_size": tuple(int(x) for x in self.group["orig_sizes"][i]),
        }

    def read_batch(self, indices) -> dict:
        idx = np.asarray(indices, dtype=np.int64)
        # Orthogonal selection reads only the chunks of these samples.
        return {
            "ids": [self.ids[i] for i in idx],
            "features": {lv.name: np.asarray(self._read_level(lv, idx)) for lv in self.levels},
            "masks": self.group["masks"].get_orthogonal_selection((idx,)),
            "orig_sizes": self.group["orig_sizes"].get_orthogonal_selection((idx,)),
        }

    def read_label(self, i: int) -> np.ndarray:
        i = int(i)
        data = self.group["labels"][i:i + 1][0]
        if not data:
            raise KeyError(f"{self.url}: sample {i} has no stored label (not extracted yet)")
        return np.asarray(Image.open(io.BytesIO(bytes(data))))

    def dask_level(self, name: str):
        import dask.array as da

        lv = self.level(name)
        return da.from_zarr(self.group[f"features/{lv.key}"])

    def info(self) -> dict:
        done = self.done_mask()
        return {
            "url": self.url, "dataset": self.dataset, "split": self.split, "fingerprint": self.fingerprint,
            "num_samples": self.num_samples, "done": int(done.sum()), "resolution": self.resolution,
            "precision": self.precision, "shard_size": self.shard_size,
            "levels": [lv.to_dict() for lv in self.levels], "bytes": self.nbytes(),
            "fingerprint_inputs": self.fingerprint_inputs, "created": self.attrs.get("created"),
            "versions": self.attrs.get("versions"), "root": self.root,
        }

    def nbytes(self) -> int:
        fs, path = filesystem(self.url)
        try:
            return int(fs.du(path))
        except Exception:
            return -1
