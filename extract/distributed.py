"""Extraction on a Dask cluster: `--scheduler local:N` or `--scheduler tcp://HOST:PORT`.

Dask does the scheduling, retries and worker-loss handling; we only cut the work into shard-aligned
tasks, so no two workers ever write one chunk, and each worker loads the model once (cached per process).
One worker builds the store's metadata (levels, fingerprint) so the fingerprint reflects the workers'
device and dtype, not the client's.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from hairdiff.core.errors import ClusterError
from hairdiff.core.fields import to_dict
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.runner import ExtractStats

_WORKER_STATE: dict[str, tuple] = {}  # per worker process: config key -> (reader, refs, extractor)
_STATE_LOCK = threading.Lock()
_STATES_KEPT = 2  # loaded extractors a worker keeps: a sweep point's train and test stores (shards run in order)


def _worker_cfg(cfg_dict: dict) -> ExtractConfig:
    cfg = ExtractConfig(**{**cfg_dict, "scheduler": None})
    cfg.workers = 0  # Dask worker processes are daemonic and may not start DataLoader workers.
    if cfg.device == "auto":
        import torch

        if torch.cuda.is_available():
            from distributed import get_worker

            name = get_worker().name
            idx = name if isinstance(name, int) else abs(hash(name))
            cfg.device = f"cuda:{idx % torch.cuda.device_count()}"  # one worker per GPU
    return cfg


def _state(cfg_dict: dict):
    from hairdiff.extract.runner import build_extractor, list_refs, viewed

    key = json.dumps(cfg_dict, sort_keys=True)
    with _STATE_LOCK:  # threads of one worker (an in-process cluster) share the cache
        if key not in _WORKER_STATE:
            while len(_WORKER_STATE) >= _STATES_KEPT:  # a sweep's many configs must not pile up models in memory
                _WORKER_STATE.pop(next(iter(_WORKER_STATE)))
            cfg = _worker_cfg(cfg_dict)
            reader, refs = list_refs(cfg)
            _WORKER_STATE[key] = (cfg, reader, refs, build_extractor(cfg), viewed(cfg, refs))
        _WORKER_STATE[key] = _WORKER_STATE.pop(key)  # most recently used last
        return _WORKER_STATE[key]


def _prepare(cfg_dict: dict, data_key: str, image_digests: list[str]) -> str:
    from hairdiff.extract.runner import open_store

    cfg, _, refs, extractor, samples = _state(cfg_dict)
    return open_store(cfg, extractor, refs, data_key, samples, image_digests=image_digests).url


def _extract_range(cfg_dict: dict, url: str, indices: list[int]) -> dict:
    from hairdiff.cache import FeatureStore
    from hairdiff.extract.runner import extract_shards

    cfg, reader, refs, extractor, samples = _state(cfg_dict)
    store = FeatureStore.open(url, mode="r+")
    stats = extract_shards(cfg, reader, refs, extractor, store, np.asarray(indices, dtype=np.int64),
                           log=lambda *a: None, samples=samples)
    return {"computed": stats.computed, "reused": stats.reused, "skipped": stats.skipped,
            "claimed_elsewhere": stats.claimed_elsewhere, "seconds": stats.seconds, "n": len(indices)}


CONNECT_SETTING = "distributed.comm.timeouts.connect"  # Dask's wait for a scheduler (env DASK_DISTRIBUTED__COMM__...)


def _client(scheduler: str):
    import dask
    from distributed import Client, LocalCluster

    if scheduler.startswith("local:"):
        n = int(scheduler.split(":", 1)[1])
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    timeout = dask.config.get(CONNECT_SETTING)
    try:
        return Client(scheduler, timeout=timeout), None  # tcp:// or tls://, checked by ExtractConfig
    except (OSError, TimeoutError) as e:  # refused, unreachable, or no answer within the timeout
        raise ClusterError(f"--scheduler {scheduler}: no Dask scheduler answered within {timeout} ({e}): start one "
                           f"there (`dask scheduler --port PORT`) or correct the address, or use --scheduler local:N; "
                           f"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT sets how long to wait") from None


@contextmanager
def _scheduler_kept(scheduler: str):
    """A connection lost mid-run is one line (exit 1): the shards the workers wrote are kept."""
    from concurrent.futures import CancelledError

    from distributed.comm.core import CommClosedError

    try:
        yield
    except (CommClosedError, CancelledError) as e:
        raise ClusterError(f"--scheduler {scheduler}: the connection to the Dask scheduler was lost mid-run "
                           f"({type(e).__name__}: {str(e)[:120]}): every shard written so far is kept; run the same "
                           f"command again once the cluster is back", exit_code=1) from None


def run_distributed(cfg: ExtractConfig, stats: ExtractStats, progress: ProgressFactory = silent) -> None:
    run_many([cfg], [stats], cfg.scheduler, progress=progress)


def run_many(cfgs: list[ExtractConfig], stats: list[ExtractStats], scheduler: str,
             progress: ProgressFactory = silent, log=None) -> None:
    """Fill several stores (`pipeline sweep`'s points) on one cluster: every store's shards are submitted at
    once, so the workers share all of them. stats[i].seconds: from the submission to store i's last shard."""
    from hairdiff.extract.runner import check_root_writable, list_refs
    from hairdiff.extract.sources import source_digests

    log = log or (lambda message: print(message, file=sys.stderr))
    keys = []
    for cfg, st in zip(cfgs, stats):
        refs = list_refs(cfg)[1]  # also settles cfg.split before the workers get the config
        keys.append(source_digests(refs))  # (data key, image digests)
        st.no_hair = sum(r.no_hair for r in refs)
        cfg.check_cache_root()
        check_root_writable(cfg, keys[-1][0])
    client, cluster = _client(scheduler)
    try:
        with _scheduler_kept(scheduler):
            _fill(client, cfgs, stats, keys, scheduler, progress, log)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _fill(client, cfgs: list[ExtractConfig], stats: list[ExtractStats], keys: list[tuple], scheduler: str,
          progress, log) -> None:
    """Open (or create) every store on a worker, then submit all their missing shards and collect them."""
    from distributed import as_completed

    from hairdiff.cache import FeatureStore
    from hairdiff.extract.runner import codec_note, planned_indices

    cfg_dicts = [to_dict(cfg) for cfg in cfgs]
    urls = client.gather([client.submit(_prepare, d, k, images, pure=False) for d, (k, images) in zip(cfg_dicts, keys)])
    owner, total = {}, 0
    t0 = time.perf_counter()
    for i, (cfg, st, url) in enumerate(zip(cfgs, stats, urls)):
        store = FeatureStore.open(url)
        note = codec_note(cfg, store)
        if note:
            log(note)
        todo = planned_indices(cfg, store)
        layout = store.layout  # samples done before this run, counted as run_local counts them
        planned = layout.num_samples if cfg.limit is None else min(cfg.limit, layout.num_images) * layout.num_views
        st.store, st.planned, st.reused = url, len(todo), int(planned - len(todo))
        shards: dict[int, list[int]] = {}
        for j in todo:
            shards.setdefault(store.shard_of(int(j)), []).append(int(j))
        for idx in shards.values():
            owner[client.submit(_extract_range, cfg_dicts[i], url, idx, pure=False, retries=3)] = i
        total += len(todo)
    left = {i: sum(1 for o in owner.values() if o == i) for i in range(len(cfgs))}
    what = f"{cfgs[0].dataset}/{cfgs[0].split}" if len(cfgs) == 1 else f"{len(cfgs)} stores"
    with progress(f"extract {what} on {scheduler}", total, 0) as advance:
        for fut in as_completed(list(owner)):
            r, i = fut.result(), owner[fut]
            st = stats[i]
            st.computed += r["computed"]
            st.reused += r["reused"]
            st.skipped += r["skipped"]
            st.claimed_elsewhere += r["claimed_elsewhere"]
            left[i] -= 1
            if not left[i]:
                st.seconds = time.perf_counter() - t0
            advance(r["n"])
