"""Read everything in a store and name each sample whose data is corrupt or missing."""
from __future__ import annotations

import numpy as np

from hairdiff.core.urls import filesystem


def _shard_key_exists(store, array_path: str, k: int, ndim: int) -> bool:
    fs, base = filesystem(store.url)
    key = "/".join([base.rstrip("/"), array_path, "c", str(k)] + ["0"] * (ndim - 1))
    return fs.exists(key)


def verify(store) -> dict:
    """Checks every done sample of every array (crc32c is verified by the codec on each read).

    A deleted shard file reads back as fill values without an error, so shard files of done samples are
    also checked for existence.
    """
    done = store.done_mask()
    corrupt: dict[int, list[str]] = {}
    arrays = [(f"features/{lv.key}", 4) for lv in store.levels] + [("masks", 3)]
    for k in range(store.num_shards):
        rng = store.shard_range(k)
        idx = [i for i in rng if done[i]]
        if not idx:
            continue
        for path, ndim in arrays:
            if not _shard_key_exists(store, path, k, ndim):
                for i in idx:
                    corrupt.setdefault(i, []).append(f"{path}: shard file missing")
                continue
            arr = store.group[path]
            for i in idx:
                try:
                    x = arr[i]
                    if x.dtype.kind == "f" and not np.isfinite(x).all():
                        corrupt.setdefault(i, []).append(f"{path}: non-finite values")
                except Exception as e:  # checksum mismatch or undecodable chunk
                    corrupt.setdefault(i, []).append(f"{path}: {type(e).__name__}: {e}"[:200])
        for i in idx:
            try:
                store.read_label(i)
            except Exception as e:
                corrupt.setdefault(i, []).append(f"labels: {type(e).__name__}"[:200])
    ids = store.ids
    bad = [{"index": i, "id": ids[i], "problems": p} for i, p in sorted(corrupt.items())]
    missing = [{"index": int(i), "id": ids[int(i)]} for i in np.flatnonzero(~done)]
    return {"url": store.url, "ok": not bad and not missing, "num_samples": store.num_samples,
            "done": int(done.sum()), "corrupt": bad, "missing": missing}
