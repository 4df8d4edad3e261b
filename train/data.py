"""Training data from feature stores: which samples, in which order, read ahead of the GPU.

The order is a pure function of (seed, epoch, offset): epoch e is a permutation drawn from a numpy
Generator seeded with (seed, e), and a batch that runs past the end of an epoch is filled from the next
one. Saving (epoch, offset) is therefore enough to resume with exactly the batches an uninterrupted run
would have read. Under DDP every rank computes the same global batch and reads only its own slice.
"""
from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from hairdiff.cache.fingerprint import HOLDINGS
from hairdiff.cache.levels import LevelSpec
from hairdiff.cache.store import FeatureStore
from hairdiff.core.errors import EmptyDataError, StoreMismatchError


def open_stores(urls: list[str]) -> list[FeatureStore]:
    """Open every store read-only and check their features are of one kind (views aside)."""
    if not urls:
        raise EmptyDataError("no feature store given: pass --cache STORE (repeatable); "
                             "`pipeline extract` prints a store's path as its last line")
    stores = [FeatureStore.open(str(u), mode="r") for u in urls]
    first = stores[0]
    for s in stores[1:]:
        if s.features_fingerprint != first.features_fingerprint:
            differ = sorted(k for k in set(first.fingerprint_inputs) | set(s.fingerprint_inputs)
                            if k != "views" and first.fingerprint_inputs.get(k) != s.fingerprint_inputs.get(k))
            raise StoreMismatchError(
                f"feature stores extracted with different settings cannot be mixed: {first.url} (fingerprint "
                f"{first.features_fingerprint}) and {s.url} ({s.features_fingerprint}) differ in "
                f"{', '.join(differ) or 'their settings'}; re-extract one with the other's settings "
                f"(`pipeline cache info STORE` shows them)")
    return stores


@dataclass
class Position:
    """Where the sample stream stands: the next sample is permutation(epoch)[offset]."""
    epoch: int = 0
    offset: int = 0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    @classmethod
    def from_dict(cls, d: dict) -> "Position":
        return cls(int(d["epoch"]), int(d["offset"]))


class CachedFeatures:
    """The images of one or more stores with one features fingerprint that have a DONE sample, addressed
    0..len-1. A store with augmented views (extract/views.py) holds several samples per image: each visit
    of an image reads one of its done views, drawn from (seed, epoch, position), so resume and DDP see the
    same draw. Without views an image is its one sample."""

    def __init__(self, stores: list[FeatureStore], seed: int = 0):
        self.stores, self.seed = stores, seed
        self.levels: list[LevelSpec] = list(stores[0].levels)
        self.resolution: int = int(stores[0].resolution)
        # What the features are, not what each store holds of them: a head trained here scores on any store
        # with this fingerprint, views or not.
        self.fingerprint: str = stores[0].features_fingerprint
        self.fingerprint_inputs: dict = {k: v for k, v in stores[0].fingerprint_inputs.items() if k not in HOLDINGS}
        parts, self.choices = [], []
        for k, s in enumerate(stores):
            done = np.flatnonzero(np.asarray(s.done_mask(), dtype=bool))
            images, views = s.layout.by_image(done)  # each image's done views, its original first
            parts += [(k, int(j)) for j in images]
            self.choices += views
        self.index = np.asarray(parts, dtype=np.int64).reshape(-1, 2)
        if len(self.index) == 0:
            names = ", ".join(s.url for s in stores)
            raise EmptyDataError(f"no finished sample in {names}: run `pipeline extract` for it first "
                                 f"(or let an interrupted extraction finish)")

    @classmethod
    def from_urls(cls, urls: list[str], seed: int = 0) -> "CachedFeatures":
        return cls(open_stores(urls), seed)

    def __len__(self) -> int:
        return len(self.index)

    def describe(self) -> list[dict]:
        """Per store: what a trained head was trained on (goes into run.json and checkpoints)."""
        return [{"dataset": s.dataset, "split": s.split, "ids_digest": s.ids_digest, "fingerprint": s.fingerprint,
                 "url": s.url, "data_key": s.data_key, "root": s.root,
                 "num_done": int(np.asarray(s.done_mask()).sum())} for s in self.stores]

    def samples(self, positions: np.ndarray, epochs: np.ndarray | None = None) -> np.ndarray:
        """(store, sample index) rows of the positions' images, one view each (the original when epochs is None)."""
        pos = np.asarray(positions, dtype=np.int64)
        rows = self.index[pos].copy()
        for r, p in enumerate(pos):
            choices = self.choices[p]
            if len(choices) > 1 and epochs is not None:
                draw = np.random.Generator(np.random.PCG64([self.seed, int(epochs[r]), int(p)])).integers(len(choices))
                rows[r, 1] = choices[draw]
            else:
                rows[r, 1] = choices[0]
        return rows

    def read(self, positions: np.ndarray, epochs: np.ndarray | None = None) -> dict:
        """Read samples (dataset positions) in the given order: features float16, labels (B,R,R) uint8.
        epochs: the epoch of each visit, which draws the view (None: the original view)."""
        pos = np.asarray(positions, dtype=np.int64)
        rows = self.samples(pos, epochs)
        stores = np.unique(rows[:, 0])
        if len(stores) == 1:
            # The store decodes straight into the batch, in batch order (repeats read once): no copy here.
            b = self.stores[int(stores[0])].read_batch(rows[:, 1])
            feats, masks = b["features"], b["masks"]
        else:
            feats = {lv.name: np.empty((len(pos), lv.channels, lv.height, lv.width), np.float16) for lv in self.levels}
            masks = np.empty((len(pos), self.resolution, self.resolution), np.uint8)
            for k in stores:
                sel = np.flatnonzero(rows[:, 0] == k)
                b = self.stores[int(k)].read_batch(rows[sel, 1])
                for name in feats:
                    feats[name][sel] = b["features"][name]
                masks[sel] = b["masks"]
        out = {name: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float16)) for name, v in feats.items()}
        labels = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8))
        return {"features": out, "labels": labels, "positions": torch.from_numpy(pos.copy())}


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(n)


def global_batch(n: int, batch_size: int, seed: int, pos: Position) -> tuple[np.ndarray, Position]:
    """The next global batch (dataset positions) and the position after it."""
    batch, _, after = global_visits(n, batch_size, seed, pos)
    return batch, after


def global_visits(n: int, batch_size: int, seed: int, pos: Position) -> tuple[np.ndarray, np.ndarray, Position]:
    """The next global batch (dataset positions), the epoch of each, and the position after it."""
    out, epochs, epoch, offset = [], [], pos.epoch, pos.offset
    while len(out) < batch_size:
        perm = epoch_permutation(n, seed, epoch)
        take = perm[offset: offset + batch_size - len(out)]
        out.extend(int(i) for i in take)
        epochs.extend([epoch] * len(take))
        offset += len(take)
        if offset >= n:
            epoch, offset = epoch + 1, 0
    return np.asarray(out, dtype=np.int64), np.asarray(epochs, dtype=np.int64), Position(epoch, offset)


def rank_slice(batch: np.ndarray, rank: int, world_size: int) -> tuple[np.ndarray, int]:
    """This rank's contiguous part of a global batch, and the global index of its first sample."""
    if len(batch) % world_size:
        raise ValueError(f"global batch size {len(batch)} is not divisible by {world_size} processes: "
                         f"choose --batch-size as a multiple of --nproc")
    per = len(batch) // world_size
    return batch[rank * per:(rank + 1) * per], rank * per


class BatchStream:
    """Iterate (batch, position_after) from a start position, reading ahead of the model.

    Reading runs in `workers` background threads, one batch each, with max(prefetch, workers) batches in
    flight, so memory stays bounded and reading overlaps compute. The threads run in parallel: the store
    decodes outside the GIL (cache/shard_codec.py). Batches come out in order whatever thread finished first,
    and the position after each is computed when it is submitted, from the order alone; a reader's error
    (CorruptSampleError) is raised by next() for the batch it belongs to.
    """

    def __init__(self, data: CachedFeatures, batch_size: int, seed: int, start: Position,
                 rank: int = 0, world_size: int = 1, workers: int = 1, prefetch: int = 2):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.pos, self.rank, self.world_size = start, rank, world_size
        self.prefetch = max(1, prefetch, workers)
        self.pool = cf.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hairdiff-read")
        self.pending: deque = deque()

    def _submit(self) -> None:
        batch, epochs, self.pos = global_visits(len(self.data), self.batch_size, self.seed, self.pos)
        mine, first = rank_slice(batch, self.rank, self.world_size)
        fut = self.pool.submit(self.data.read, mine, epochs[first:first + len(mine)])
        self.pending.append((fut, first, self.pos))

    def __iter__(self) -> Iterator[tuple[dict, Position]]:
        return self

    def __next__(self) -> tuple[dict, Position]:
        while len(self.pending) < self.prefetch:
            self._submit()
        fut, first, after = self.pending.popleft()
        batch = fut.result()
        batch["global_start"] = first  # global index of this rank's first sample in the global batch
        return batch, after

    def close(self) -> None:
        for fut, _, _ in self.pending:
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BatchStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
