"""Decode workers never inherit a lock held at the instant the loader starts.

Extraction's process runs threads (zarr's event loop, Dask's and the writers' pools); a worker forked from it
copies any lock one of them holds at that instant, already held, and waits on it forever. Here the held lock is
this module's, taken by the test itself: a forked worker hangs (the timeout fails the test), a worker started
from the fork server imports this module afresh and decodes.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from hairdiff.extract.loading import decode_loader
from hairdiff.extract.readers.base import LoadedSample, SampleRef

HELD = threading.Lock()


class LockingReader:
    """A reader whose decoder takes a module-level lock, as a decoding library's global state would."""

    def load(self, ref: SampleRef) -> LoadedSample:
        with HELD:
            image = np.full((20, 30, 3), len(ref.id), np.uint8)
            return LoadedSample(ref.id, image, np.zeros((20, 30), np.uint8))


@pytest.mark.timeout(120)
def test_workers_decode_while_the_parent_holds_a_lock():
    refs = [SampleRef(f"s{i}", Path(f"s{i}.png"), None) for i in range(6)]
    with HELD:  # held for the whole run, as another thread's lock might be when workers start
        batches = list(decode_loader(LockingReader(), refs, np.arange(6), resolution=16, batch_size=2, workers=2))
    decoded = [d for b in batches for d in b.items]
    assert [d.id for d in decoded] == [r.id for r in refs]
    assert all(d.error is None for d in decoded)
    assert all(b.images.shape == (2, 16, 16, 3) for b in batches)
