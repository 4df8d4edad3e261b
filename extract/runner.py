"""`pipeline extract`: dataset -> frozen backbone -> feature store, resumable and shard by shard.

Work is organised by store shard: a shard is claimed, its missing samples are computed, and the shard is
written in one go with its done flags set last. A crashed or pre-empted run therefore loses at most the
shards it held, and the same command again computes only what is missing. The same shard loop runs in
each Dask worker for distributed extraction (extract/distributed.py).
"""
from __future__ import annotations

import hashlib
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hairdiff.cache import FeatureStore, default_cache_root, fingerprint, store_url
from hairdiff.cache.geometry import preprocessing_record
from hairdiff.core.devices import resolve_device, resolve_dtype
from hairdiff.core.errors import BadInputStop, StoreWriteError
from hairdiff.core.fields import to_dict
from hairdiff.core.files import atomic_write_json
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.loading import decode_loader, to_model_input
from hairdiff.extract.readers import get_reader
from hairdiff.extract.readers.ids import read_ids_file


@dataclass
class ExtractStats:
    store: str = ""
    planned: int = 0
    computed: int = 0
    reused: int = 0
    skipped: list = field(default_factory=list)  # [{"id", "index", "reason"}]
    claimed_elsewhere: int = 0
    seconds: float = 0.0
    batch_size: int = 0
    stage_seconds: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


def ids_digest(cfg: ExtractConfig) -> str | None:
    """A store holds one sample list: an explicit --ids selection is told apart by its file's digest."""
    return hashlib.sha256(Path(cfg.ids_file).read_bytes()).hexdigest()[:8] if cfg.ids_file else None


def store_folder_name(cfg: ExtractConfig) -> str:
    digest = ids_digest(cfg)
    return f"{cfg.split}-ids-{digest}" if digest else cfg.split


def list_refs(cfg: ExtractConfig):
    reader = get_reader(cfg.dataset)
    ids = read_ids_file(cfg.ids_file) if cfg.ids_file else None
    return reader, reader.list_samples(Path(cfg.root), cfg.split, ids)


def build_extractor(cfg: ExtractConfig):
    # Imported here so `pipeline --help` and store-only commands never pay for diffusers.
    from hairdiff.extract.backbone import load_backbone
    from hairdiff.extract.features import FeatureExtractor
    from hairdiff.extract.taps import resolve_taps

    device = resolve_device(cfg.device)
    backbone = load_backbone(cfg.model, device=device, dtype=resolve_dtype(cfg.dtype, device), revision=cfg.revision)
    taps = resolve_taps(cfg.taps, backbone)
    return FeatureExtractor(backbone, taps, prompt=cfg.prompt, timestep=cfg.timestep,
                            resolution=cfg.resolution, seed=cfg.seed, precision=cfg.precision)


def open_store(cfg: ExtractConfig, extractor, refs) -> FeatureStore:
    inputs = extractor.fingerprint_inputs
    fp = fingerprint(inputs)
    url = store_url(cfg.cache_root or default_cache_root(), cfg.dataset, store_folder_name(cfg), fp)
    return FeatureStore.create_or_open(
        url, fingerprint=fp, fingerprint_inputs=inputs, dataset=cfg.dataset, split=cfg.split,
        root=str(cfg.root), ids=[r.id for r in refs], levels=extractor.levels, resolution=cfg.resolution,
        preprocessing=preprocessing_record(cfg.resolution), precision=cfg.precision, shard_size=cfg.shard_size,
        ids_digest=ids_digest(cfg),
    )


def planned_indices(cfg: ExtractConfig, store: FeatureStore) -> np.ndarray:
    missing = store.missing_indices()
    if cfg.limit is not None:
        missing = missing[missing < cfg.limit]
    return missing


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


class BatchRunner:
    """Runs the extractor on a batch, halving the micro-batch on out-of-memory instead of losing the run."""

    def __init__(self, extractor, device: torch.device, dtype: torch.dtype, batch_size: int):
        self.extractor, self.device, self.dtype, self.micro = extractor, device, dtype, batch_size

    def __call__(self, images: list[np.ndarray]) -> dict[str, np.ndarray]:
        while True:
            try:
                parts = [self._run(images[i:i + self.micro]) for i in range(0, len(images), self.micro)]
                return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not _is_oom(e) or self.micro == 1:
                    raise
                self.micro = max(1, self.micro // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                warnings.warn(f"out of memory: retrying at batch size {self.micro}", RuntimeWarning, stacklevel=2)

    def _run(self, images):
        x = to_model_input(images, self.device, self.dtype)
        with torch.inference_mode():
            feats = self.extractor(x)
        return {k: v.to("cpu").to(torch.float16).numpy() for k, v in feats.items()}


def extract_shards(cfg: ExtractConfig, reader, refs, extractor, store: FeatureStore, indices: np.ndarray,
                   advance=None, stats: ExtractStats | None = None) -> ExtractStats:
    """Compute and write `indices` (missing samples), claiming each shard before its first sample."""
    stats = stats or ExtractStats(store=store.url)
    device = resolve_device(cfg.device)
    run = BatchRunner(extractor, device, resolve_dtype(cfg.dtype, device), cfg.batch_size)
    by_shard: dict[int, list[int]] = {}
    for i in indices:
        by_shard.setdefault(store.shard_of(int(i)), []).append(int(i))
    pending: dict[int, dict] = {}  # shard -> {"left": set, "ok": [Decoded], "feats": [dict], "claim": cm}
    refused: set[int] = set()
    t0 = time.perf_counter()
    try:
        loader = decode_loader(reader, refs, indices, cfg.resolution, cfg.batch_size, cfg.workers)
        for batch in loader:
            good = []
            for d in batch:
                k = store.shard_of(d.index)
                if k in refused:
                    continue
                if k not in pending:
                    claim = store.claim(k)
                    if not claim.__enter__():
                        claim.__exit__(None, None, None)
                        refused.add(k)
                        stats.claimed_elsewhere += len(by_shard[k])
                        continue
                    # Another process may have finished this shard before we got the claim.
                    done = store.done_mask()
                    left = {i for i in by_shard[k] if not done[i]}
                    stats.reused += len(by_shard[k]) - len(left)
                    pending[k] = {"left": left, "ok": [], "feats": [], "claim": claim}
                if d.index not in pending[k]["left"]:
                    continue
                if d.error is not None:
                    if cfg.on_error == "stop":
                        raise BadInputStop(d.error)
                    stats.skipped.append({"index": d.index, "id": d.id, "reason": d.error})
                    print(f"skipped {d.error}", file=sys.stderr)
                    pending[k]["left"].discard(d.index)
                else:
                    good.append(d)
            if good:
                feats = run([d.image for d in good])
                for j, d in enumerate(good):
                    p = pending[store.shard_of(d.index)]
                    p["ok"].append(d)
                    p["feats"].append({name: a[j] for name, a in feats.items()})
                    p["left"].discard(d.index)
            for k in [k for k, p in pending.items() if not p["left"]]:
                _flush_shard(store, pending.pop(k), stats)
            if advance is not None:
                advance(len(batch))
        for k in list(pending):  # shards whose remaining samples were all skipped
            _flush_shard(store, pending.pop(k), stats)
    except (BadInputStop, KeyboardInterrupt):
        for k in list(pending):  # keep what was computed before the stop
            _flush_shard(store, pending.pop(k), stats)
        raise
    finally:
        for p in pending.values():  # interrupted: release claims; unwritten shards stay missing
            p["claim"].__exit__(None, None, None)
        stats.seconds += time.perf_counter() - t0
        stats.batch_size = run.micro
    return stats


def _flush_shard(store: FeatureStore, p: dict, stats: ExtractStats) -> None:
    try:
        if p["ok"]:
            ok = p["ok"]
            store.write_samples(
                np.array([d.index for d in ok]),
                {name: np.stack([f[name] for f in p["feats"]]) for name in p["feats"][0]},
                np.stack([d.mask for d in ok]),
                [d.label for d in ok],
                np.array([d.orig_size for d in ok], dtype=np.int64),
            )
            stats.computed += len(ok)
    except OSError as e:
        raise StoreWriteError(f"writing to {store.url} failed ({e.strerror or e}); the store is consistent "
                              "(done flags are written after data): free space or fix the target and run the "
                              "same command again to continue") from e
    finally:
        p["claim"].__exit__(None, None, None)


def write_report(path: Path, cfg: ExtractConfig, stats: ExtractStats) -> None:
    atomic_write_json(path, {"config": to_dict(cfg), **asdict(stats), "images_per_s": stats.images_per_s},
                      indent=2)


def run_local(cfg: ExtractConfig, stats: ExtractStats, progress: ProgressFactory = silent, log=print) -> None:
    """The whole single-process extraction: list samples, load the model, open the store, fill it."""
    reader, refs = list_refs(cfg)
    log(f"{len(refs)} samples in {cfg.dataset}/{cfg.split}; loading model {cfg.model} ...")
    extractor = build_extractor(cfg)
    store = open_store(cfg, extractor, refs)
    todo = planned_indices(cfg, store)
    stats.store, stats.planned = store.url, len(todo)
    stats.reused = int(min(len(refs), cfg.limit or len(refs)) - len(todo))
    with progress(f"extract {cfg.dataset}/{cfg.split}", len(todo), 0) as advance:
        extract_shards(cfg, reader, refs, extractor, store, todo, advance=advance, stats=stats)
