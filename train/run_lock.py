"""One training at a time in a run folder: RUN/.lock names the process that holds it (core/claim.py).

Two `pipeline train` commands with one --out would both write log.jsonl, checkpoints and the final head, and
both exit 0 on a folder neither made alone. The main process takes the lock before it looks at the folder and
keeps it until it returns; a second one is refused, naming the holder. A lock left by a killed run is taken
over: at once on its host (its pid is gone), after the lease elsewhere; the holder refreshes its time every
LEASE / 4, so a long run on another host keeps it.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from hairdiff.core.claim import me, read_claim, try_claim
from hairdiff.core.errors import RunDirError
from hairdiff.core.files import atomic_write_json

LOCK = ".lock"
LEASE_SECONDS = 600.0


def _refresh(path: Path, mine: dict, stop: threading.Event) -> None:
    """Keep the lock's time recent while the run lasts (the lease is what other hosts judge it by)."""
    while not stop.wait(LEASE_SECONDS / 4):
        if read_claim(str(path)).get("token") != mine["token"]:
            return  # no longer ours (removed by hand): never write over another holder's lock
        atomic_write_json(path, {**mine, "time": time.time()})


@contextmanager
def hold_run_dir(out: Path) -> Iterator[None]:
    """Hold `out` for one training; RunDirError when a live process holds it."""
    out = Path(out)
    path, mine = out / LOCK, me()
    if not try_claim(str(path), mine, LEASE_SECONDS):
        held = read_claim(str(path))
        since = datetime.fromtimestamp(held.get("time", 0)).isoformat(timespec="seconds")
        raise RunDirError(f"{out} is in use by another `pipeline train` (pid {held.get('pid')} on "
                          f"{held.get('host')}, {path} refreshed at {since}): wait for it to finish, or pass another "
                          f"--out (a lock left by a killed run is taken over: at once on its host, after "
                          f"{LEASE_SECONDS / 60:.0f} minutes elsewhere)")
    stop = threading.Event()
    keeper = threading.Thread(target=_refresh, args=(path, mine, stop), daemon=True, name="hairdiff-run-lock")
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        if read_claim(str(path)).get("token") == mine["token"]:
            path.unlink(missing_ok=True)
