"""Host side of extraction: samples gathered into their shards, whole shards written by a pool of threads.

A shard is claimed when its first sample arrives and gets one host buffer per level, into which the device
stage copies each sample's features (pinned memory on CUDA, so the copies are asynchronous). When every
planned sample of a shard is computed or skipped, the shard goes to a writer thread, which compresses and
writes it whole (zarr's codecs release the GIL, so writers run in parallel) and releases the claim. The
queue of shards waiting for a writer is bounded, which bounds host memory: at most
(writers + QUEUE) shards, each `shard_size` x the bytes of one sample (BENCHMARKS.md gives the figure).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from hairdiff.core.errors import StoreWriteError
from hairdiff.extract.loading import Decoded

QUEUE = 2  # complete shards waiting for a free writer


@dataclass
class Shard:
    k: int
    lo: int
    left: set[int]  # planned indices not computed or skipped yet
    claim: object
    buffers: dict[str, torch.Tensor]  # level name -> (slots, C, H, W) float16
    ok: list[Decoded] = field(default_factory=list)


class BufferPool:
    """Reuses shard buffers: page-locking memory is slow, and a run needs only a bounded number of them."""

    def __init__(self, levels, slots: int, pin: bool):
        self.shapes = {lv.name: (slots, lv.channels, lv.height, lv.width) for lv in levels}
        self.pin, self.free, self.lock = pin, [], threading.Lock()

    def get(self) -> dict[str, torch.Tensor]:
        with self.lock:
            if self.free:
                return self.free.pop()
        return {n: torch.empty(s, dtype=torch.float16, pin_memory=self.pin) for n, s in self.shapes.items()}

    def put(self, buffers: dict[str, torch.Tensor]) -> None:
        with self.lock:
            self.free.append(buffers)


class WriterPool:
    """Writer threads with a bounded queue; the first failure is re-raised in the main thread."""

    def __init__(self, writers: int):
        self.pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="hairdiff-write")
        self.slots = threading.BoundedSemaphore(writers + QUEUE)
        self.futures: list[Future] = []

    def submit(self, fn, *args) -> None:
        self.slots.acquire()  # blocks while the queue is full: back-pressure on the device loop
        fut = self.pool.submit(fn, *args)
        fut.add_done_callback(lambda _: self.slots.release())
        self.futures.append(fut)

    def raise_errors(self) -> None:
        for fut in [f for f in self.futures if f.done()]:
            self.futures.remove(fut)
            fut.result()

    def drain(self) -> BaseException | None:
        """Wait for every submitted shard; return the first failure (the others are written or failed too)."""
        first = None
        for fut in self.futures:
            e = fut.exception()
            first = first or e
        self.futures.clear()
        return first

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class ShardAssembler:
    def __init__(self, store, by_shard: dict[int, list[int]], stats, clock, writers: WriterPool, pin: bool):
        self.store, self.by_shard, self.stats, self.clock, self.writers = store, by_shard, stats, clock, writers
        self.open: dict[int, Shard] = {}
        self.refused: set[int] = set()
        self.buffers = BufferPool(store.levels, store.shard_size, pin)
        self.lock = threading.Lock()  # stats are updated by writer threads

    def admit(self, d: Decoded) -> Shard | None:
        """The open shard of a sample to compute now, claiming the shard first; None when the sample is not
        ours to compute (its shard is claimed by another process, or was finished meanwhile)."""
        k = self.store.shard_of(d.index)
        if k in self.refused:
            return None
        if k not in self.open:
            claim = self.store.claim(k)
            if not claim.__enter__():
                claim.__exit__(None, None, None)
                self.refused.add(k)
                self.stats.claimed_elsewhere += len(self.by_shard[k])
                return None
            done = self.store.shard_done(k)  # another process may have finished it before our claim
            lo = self.store.shard_range(k).start
            left = {i for i in self.by_shard[k] if not done[i - lo]}
            self.stats.reused += len(self.by_shard[k]) - len(left)
            self.open[k] = Shard(k, self.store.shard_range(k).start, left, claim, self.buffers.get())
        shard = self.open[k]
        return shard if d.index in shard.left else None

    def destination(self, shard: Shard, index: int) -> dict[str, torch.Tensor]:
        return {name: buf[index - shard.lo] for name, buf in shard.buffers.items()}

    def computed(self, shard: Shard, d: Decoded) -> None:
        shard.ok.append(d)
        shard.left.discard(d.index)

    def skipped(self, shard: Shard, d: Decoded, reason: str) -> None:
        self.stats.skipped.append({"index": d.index, "id": d.id, "reason": reason})
        shard.left.discard(d.index)

    def flush(self, everything: bool = False) -> None:
        """Hand complete shards (with `everything`: all open shards) to the writers."""
        for k in [k for k, s in self.open.items() if everything or not s.left]:
            self.writers.submit(self._write, self.open.pop(k))

    def release(self) -> None:
        """Interrupted: give up the open shards (their samples stay missing and are recomputed next time)."""
        for shard in self.open.values():
            shard.claim.__exit__(None, None, None)
        self.open.clear()

    def _write(self, shard: Shard) -> None:
        try:
            if shard.ok:
                with self.clock.host("store"):  # all of write_samples: compress + write + the small arrays
                    self._write_samples(shard)
                with self.lock:
                    self.stats.computed += len(shard.ok)
        except OSError as e:
            raise StoreWriteError(f"writing to {self.store.url} failed ({e.strerror or e}); the store is consistent "
                                  "(done flags are written after data): free space or fix the target and run the "
                                  "same command again to continue") from e
        finally:
            shard.claim.__exit__(None, None, None)
            self.buffers.put(shard.buffers)

    def _write_samples(self, shard: Shard) -> None:
        ok = sorted(shard.ok, key=lambda d: d.index)
        slots = np.array([d.index - shard.lo for d in ok])
        whole = len(slots) == len(next(iter(shard.buffers.values()))) and (slots == np.arange(len(slots))).all()
        # A complete shard is handed over as the buffers themselves: no copy on the host.
        feats = {n: (b.numpy() if whole else b.numpy()[slots]) for n, b in shard.buffers.items()}
        self.store.write_samples(np.array([d.index for d in ok]), feats, np.stack([d.mask for d in ok]),
                                 [d.label for d in ok], np.array([d.orig_size for d in ok], dtype=np.int64))
