"""The feature cache for other models: a read-only view of a store, `open_store(path_or_url)`.

Everything a model trained on the cached features needs, without the store's internals: each level's features,
the training masks, the exact annotations, ids, views and the fingerprint, as a `torch.utils.data.Dataset`
(`torch_dataset()`) and as dask arrays (`features(level)`, `masks()`). Every read goes through the store's verified
path (cache/store.py: each done sample's crc32c checked; in stores written before those digests, that its shard
files exist), so a lost or changed shard is a CorruptSampleError naming the sample, never zeros. Samples not
extracted yet (an interrupted or `--limit` extraction) are left out of `torch_dataset()` and read as NaN features
(mask 255, ignore) in the dask arrays; `done` says which they are.

    from hairdiff.cache import open_store
    store = open_store("hairdiff-demo/cache/folder/train/<fingerprint16>-<data12>.zarr")
    store.levels                  # [LevelSpec(name, stride, channels, height, width), ...]
    x = store.features("unet.up_blocks.3")       # dask (N, C, H, W) float16
    loader = torch.utils.data.DataLoader(store.torch_dataset(), batch_size=8, shuffle=True)
"""
from __future__ import annotations

import numpy as np

from hairdiff.cache.levels import LevelSpec
from hairdiff.cache.store import FeatureStore
from hairdiff.core.errors import UsageError
from hairdiff.core.labels import IGNORE


def open_store(path_or_url) -> "StoreReader":
    """A feature store (a local path, or an s3://, gs://, file:// URL), opened read-only: nothing is ever written.
    A path that holds no store, or a store whose metadata is damaged, is one CacheError line naming it."""
    return StoreReader(FeatureStore.open(str(path_or_url), mode="r"))


class StoreReader:
    """A store, read-only. Attributes: url, fingerprint (what the store holds: backbone, prompt, timestep,
    resolution, taps, precision, views), features_fingerprint (what its features are: heads and stores that share
    it are interchangeable), fingerprint_inputs (those settings, readable), dataset, split, resolution, levels,
    ids (per sample, views included: "<id>@<view>"), layout (which image and view each sample is), views."""

    def __init__(self, store: FeatureStore):
        self._store = store
        s = store
        self.url, self.fingerprint, self.features_fingerprint = s.url, s.fingerprint, s.features_fingerprint
        self.fingerprint_inputs, self.dataset, self.split = s.fingerprint_inputs, s.dataset, s.split
        self.resolution, self.precision, self.shard_size = s.resolution, s.precision, s.shard_size
        self.levels: list[LevelSpec] = list(s.levels)
        self.layout, self.views = s.layout, s.views
        self.num_samples, self.num_images = s.num_samples, s.num_images

    def __repr__(self) -> str:
        return (f"StoreReader({self.url!r}: {self.dataset}/{self.split}, {self.num_samples} samples, "
                f"{int(self.done.sum())} done, levels {[lv.name for lv in self.levels]})")

    @property
    def ids(self) -> list[str]:
        return self._store.ids

    @property
    def done(self) -> np.ndarray:
        """bool (N,): which samples are extracted (the others hold nothing yet)."""
        return self._store.done_mask()

    def level(self, name: str) -> LevelSpec:
        """A level by its tap name ("unet.up_blocks.3") or its Zarr key ("unet_up_blocks_3")."""
        try:
            return self._store.level(name)
        except KeyError:
            raise UsageError(f"level {name!r}: {self.url} has levels {', '.join(lv.name for lv in self.levels)}") \
                from None

    # ----------------------------------------------------------------------------------------- samples
    def sample(self, i: int, levels: list[str] | None = None) -> dict:
        """One sample, verified: {"index", "id", "features": {level name: (C, H, W) float32}, "mask": (R, R) uint8
        (1 hair, 0 background, 255 ignore), "orig_size": (H, W) of its image}."""
        i = self._index(i)
        b = self._store.read_batch([i], [self.level(n).name for n in levels] if levels else None)
        return {"index": i, "id": b["ids"][0], "features": {k: v[0].astype(np.float32) for k, v in
                                                            b["features"].items()},
                "mask": b["masks"][0], "orig_size": tuple(int(v) for v in b["orig_sizes"][0])}

    def label(self, i: int) -> np.ndarray:
        """The sample's annotation at its own resolution, exact (uint8: 1 hair, 0 background, 255 ignore)."""
        return self._store.read_label(self._index(i))

    def _index(self, i) -> int:
        return int(self._indices([i])[0])

    def _indices(self, samples) -> np.ndarray:
        """`samples` as indices, each checked to be a done sample (UsageError naming the first that is not)."""
        idx = np.asarray([int(i) for i in samples], dtype=np.int64)
        outside = idx[(idx < 0) | (idx >= self.num_samples)]
        if len(outside):
            raise UsageError(f"sample {outside[0]}: {self.url} has samples 0..{self.num_samples - 1}")
        undone = idx[~self._store.done_flags(idx)]
        if len(undone):
            i = int(undone[0])
            raise UsageError(f"sample {i} ({self.ids[i]}) of {self.url} is not extracted yet: run the `pipeline "
                             "extract` command that made the store to the end, or use the done samples (.done)")
        return idx

    # ----------------------------------------------------------------------------------------- as torch
    def torch_dataset(self, levels: list[str] | None = None, samples=None, originals_only: bool = False):
        """A torch Dataset of done samples (or `samples`, indices): each item {"index", "id", "features": {level:
        float32 tensor (C, H, W)}, "mask": uint8 tensor (R, R)}, verified. originals_only: leave the augmented
        views out (one sample per image)."""
        from hairdiff.cache.torch_data import StoreDataset

        names = [self.level(n).name for n in levels] if levels else [lv.name for lv in self.levels]
        chosen = np.flatnonzero(self.done) if samples is None else self._indices(samples)
        if originals_only:
            chosen = chosen[self.layout.is_original(chosen)]
        return StoreDataset(self._store, names, chosen)

    # ----------------------------------------------------------------------------------------- as dask
    def features(self, level: str):
        """dask array (N, C, H, W) of one level, one chunk per shard, read verified (not extracted: NaN); float16 as
        stored (int8 stores: float32, dequantized)."""
        lv = self.level(level)
        return self._dask(_Verified(self._store, lv), lv.key)

    def masks(self):
        """dask array (N, R, R) uint8 of the training masks at the store's resolution (1 hair, 0 background, 255
        ignore or not extracted), verified."""
        return self._dask(_Verified(self._store, None), "masks")

    def _dask(self, src: "_Verified", what: str):
        import dask.array as da
        from dask.base import tokenize

        return da.from_array(src, chunks=(self.shard_size, *src.shape[1:]), asarray=False, lock=False,
                             name=f"hairdiff-{what}-{tokenize(self.url, self.fingerprint)}",
                             meta=np.empty((0,) * src.ndim, src.dtype))


class _Verified:
    """An array-like over one level (or the masks, level None) that dask slices a chunk at a time: each chunk is
    a verified read of its samples (FeatureStore.read_batch), samples not extracted yet as NaN (masks: ignore)."""

    def __init__(self, store: FeatureStore, level: LevelSpec | None):
        self.store, self.lv = store, level
        r = store.resolution
        self.shape = (store.num_samples, level.channels, level.height, level.width) if level else (store.num_samples,
                                                                                                      r, r)
        self.dtype = np.dtype(np.uint8 if level is None else np.float16 if store.precision == "fp16" else np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows = np.arange(self.store.num_samples)[key[0]]
        rows = np.atleast_1d(rows)
        done = self.store.done_flags(rows)  # only done samples are read: the others hold nothing to verify
        if self.lv is None:
            out = np.full((len(rows), *self.shape[1:]), IGNORE, np.uint8)
            if done.any():
                out[done] = self.store.read_batch(rows[done], levels=[])["masks"]
        else:
            out = np.full((len(rows), *self.shape[1:]), np.nan, self.dtype)
            if done.any():
                out[done] = self.store.read_batch(rows[done], levels=[self.lv.name])["features"][self.lv.name]
        out = out[(slice(None), *key[1:])]
        return out[0] if np.ndim(np.arange(self.store.num_samples)[key[0]]) == 0 else out
