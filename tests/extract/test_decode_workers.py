"""Decode workers never inherit a lock held at the instant the loader starts.

Extraction's process runs threads (zarr's event loop, Dask's and the writers' pools); a worker forked from it
copies any lock one of them holds at that instant, already held, and waits on it forever. Here the held lock is
this module's, taken by the test itself: a forked worker hangs (the timeout fails the test), a worker started
from the fork server imports this module afresh and decodes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from hairdiff.extract.loading import decode_loader
from hairdiff.extract.readers.base import LoadedSample, SampleRef

REPO = Path(__file__).resolve().parents[2]
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


def test_a_temporary_folder_too_long_for_a_socket_is_one_line_that_names_it_and_the_fix(tmp_path):
    # Before Python 3.13 the fork server listens on a socket named under TMPDIR; a socket's name holds at most
    # 107 bytes, and a user's (or a job scheduler's) TMPDIR can be longer. A fresh process: this one's fork
    # server may already run.
    deep = tmp_path / ("t" * 60) / ("m" * 60)
    deep.mkdir(parents=True)
    script = (
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from tests.extract.test_decode_workers import LockingReader\n"
        "from hairdiff.core.errors import UsageError\n"
        "from hairdiff.extract.loading import decode_loader\n"
        "from hairdiff.extract.readers.base import SampleRef\n"
        "refs = [SampleRef(f's{i}', Path('x.png'), None) for i in range(4)]\n"
        "try:\n"
        "    print(sum(len(b.ok) for b in decode_loader(LockingReader(), refs, np.arange(4), 16, 2, workers=2)))\n"
        "except UsageError as e:\n"
        "    print(e)\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                       env={**os.environ, "TMPDIR": str(deep)})
    assert p.returncode == 0, p.stderr[-2000:]
    if sys.version_info >= (3, 13):  # the fork server finds a short folder of its own
        assert p.stdout.split() == ["4"]
    else:
        assert str(deep) in p.stdout and "set TMPDIR to a shorter folder, or pass --workers 0" in p.stdout
