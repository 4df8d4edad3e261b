"""Extraction on a Dask cluster: `--scheduler local:N` or `--scheduler tcp://HOST:PORT`.

Dask does the scheduling, retries and worker-loss handling; we only cut the work into shard-aligned
tasks, so no two workers ever write one chunk, and each worker loads the model once (cached per process).
One worker builds the store's metadata (levels, fingerprint) so the fingerprint reflects the workers'
device and dtype, not the client's.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from hairdiff.core.fields import to_dict
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.runner import ExtractStats

_WORKER_STATE: dict[str, tuple] = {}  # per worker process: config key -> (reader, refs, extractor)


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
    if key not in _WORKER_STATE:
        cfg = _worker_cfg(cfg_dict)
        reader, refs = list_refs(cfg)
        _WORKER_STATE[key] = (cfg, reader, refs, build_extractor(cfg), viewed(cfg, refs))
    return _WORKER_STATE[key]


def _prepare(cfg_dict: dict, data_key: str) -> str:
    from hairdiff.extract.runner import open_store

    cfg, _, refs, extractor, samples = _state(cfg_dict)
    return open_store(cfg, extractor, refs, data_key, samples).url


def _extract_range(cfg_dict: dict, url: str, indices: list[int]) -> dict:
    from hairdiff.cache import FeatureStore
    from hairdiff.extract.runner import extract_shards

    cfg, reader, refs, extractor, samples = _state(cfg_dict)
    store = FeatureStore.open(url, mode="r+")
    stats = extract_shards(cfg, reader, refs, extractor, store, np.asarray(indices, dtype=np.int64),
                           log=lambda *a: None, samples=samples)
    return {"computed": stats.computed, "reused": stats.reused, "skipped": stats.skipped,
            "claimed_elsewhere": stats.claimed_elsewhere, "seconds": stats.seconds, "n": len(indices)}


def _client(scheduler: str):
    from distributed import Client, LocalCluster

    if scheduler.startswith("local:"):
        n = int(scheduler.split(":", 1)[1])
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    return Client(scheduler), None  # tcp:// or tls://, checked by ExtractConfig


def run_distributed(cfg: ExtractConfig, stats: ExtractStats, progress: ProgressFactory = silent) -> None:
    from distributed import as_completed

    from hairdiff.cache import FeatureStore
    from hairdiff.extract.runner import codec_note, planned_indices

    from hairdiff.extract.runner import list_refs
    from hairdiff.extract.sources import data_key

    scheduler = cfg.scheduler
    refs = list_refs(cfg)[1]  # also settles cfg.split before the workers get the config
    key, stats.no_hair = data_key(refs), sum(r.no_hair for r in refs)
    cfg.check_cache_root()
    client, cluster = _client(scheduler)
    try:
        cfg_dict = to_dict(cfg)
        url = client.submit(_prepare, cfg_dict, key, pure=False).result()
        store = FeatureStore.open(url)
        note = codec_note(cfg, store)
        if note:
            print(note, file=sys.stderr)
        todo = planned_indices(cfg, store)
        stats.store, stats.planned = url, len(todo)
        shards: dict[int, list[int]] = {}
        for i in todo:
            shards.setdefault(store.shard_of(int(i)), []).append(int(i))
        futures = [client.submit(_extract_range, cfg_dict, url, idx, pure=False, retries=3)
                   for idx in shards.values()]
        t0 = time.perf_counter()
        with progress(f"extract {cfg.dataset}/{cfg.split} on {scheduler}", len(todo), 0) as advance:
            for fut in as_completed(futures):
                r = fut.result()
                stats.computed += r["computed"]
                stats.reused += r["reused"]
                stats.skipped += r["skipped"]
                stats.claimed_elsewhere += r["claimed_elsewhere"]
                advance(r["n"])
        stats.seconds = time.perf_counter() - t0
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
