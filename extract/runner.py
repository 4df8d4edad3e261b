"""`pipeline extract`: dataset -> frozen backbone -> feature store, resumable, shard by shard, overlapped.

Work is organised by store shard: a shard is claimed, its missing samples are computed, and the shard is
written in one go with its done flags set last. A crashed or pre-empted run therefore loses at most the
shards it held, and the same command again computes only what is missing. The stages overlap: decoding in
worker processes (extract/loading.py), the device asynchronous with the host (extract/compute.py), whole
shards compressed and written by a pool of threads (extract/assembly.py). The same loop runs in each Dask
worker for distributed extraction (extract/distributed.py).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hairdiff.cache import FeatureStore, default_cache_root, fingerprint, store_url
from hairdiff.cache.geometry import preprocessing_record
from hairdiff.cache.location import store_name
from hairdiff.cache.store import codec_threads
from hairdiff.core.devices import resolve_device, resolve_dtype
from hairdiff.core.errors import BadInputStop
from hairdiff.core.fields import to_dict
from hairdiff.core.files import atomic_write_json
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.extract.assembly import ShardAssembler, WriterPool
from hairdiff.extract.compute import ComputeStage
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.loading import decode_loader, worker_start
from hairdiff.extract.readers.ids import read_ids_file
from hairdiff.extract.readers.registry import default_split, get_reader
from hairdiff.extract.timing import StageClock


@dataclass
class ExtractStats:
    store: str = ""
    planned: int = 0
    computed: int = 0
    reused: int = 0
    skipped: list = field(default_factory=list)  # [{"id", "index", "reason"}]
    claimed_elsewhere: int = 0
    no_hair: int = 0  # images whose absent annotation the layout defines as "no hair" (CelebAMask-HQ)
    seconds: float = 0.0
    batch_size: int = 0
    writers: int = 0
    recomputed: dict = field(default_factory=dict)  # samples recomputed in float32: {"vae_fp32": n, "full_fp32": n}
    stage_seconds: dict = field(default_factory=dict)
    gpu_busy_fraction: float | None = None
    gpu_memory_peak_gb: float | None = None
    warmup_seconds: float | None = None

    @property
    def images_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


def list_refs(cfg: ExtractConfig):
    """The reader and the split's samples; fills in cfg.split when it was not given."""
    reader = get_reader(cfg.dataset)
    if cfg.split is None:
        cfg.split = default_split(reader, Path(cfg.root))
    ids = read_ids_file(cfg.ids_file) if cfg.ids_file else None
    return reader, reader.list_samples(Path(cfg.root), cfg.split, ids)


def build_extractor(cfg: ExtractConfig):
    # Imported here so `pipeline --help` and store-only commands never pay for diffusers.
    from hairdiff.extract import acceleration
    from hairdiff.extract.backbone import load_backbone
    from hairdiff.extract.features import FeatureExtractor
    from hairdiff.extract.taps import resolve_taps

    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest convolutions once
    backbone = load_backbone(cfg.model, device=device, dtype=resolve_dtype(cfg.dtype, device), revision=cfg.revision,
                             reuse=not cfg.compile)  # compiling changes the modules: a backbone of its own
    acceleration.set_channels_last(backbone, cfg.channels_last)
    acceleration.set_sdpa(backbone, cfg.sdpa)
    taps = resolve_taps(cfg.taps, backbone)
    fx = FeatureExtractor(backbone, taps, prompt=cfg.prompt, timestep=cfg.timestep, resolution=cfg.resolution,
                          seed=cfg.seed, precision=cfg.precision)
    if cfg.compile:
        acceleration.compile_blocks(backbone)
    return fx


def viewed(cfg: ExtractConfig, refs):
    """The store's samples: the images, then each extra view of every image (cache/layout.py's order).
    Built once per run (run_local) and handed to open_store and extract_shards."""
    from hairdiff.extract.views import ViewedSamples, parse_views

    return ViewedSamples(refs, parse_views(cfg.views), cfg.seed, cfg.views)


def open_store(cfg: ExtractConfig, extractor, refs, data_key: str, samples=None, log=None,
               image_digests: list[str] | None = None) -> FeatureStore:
    """The store for these features of exactly these files: keyed by the fingerprint and the data. The codec
    is not part of the key: an existing store is reused with its own codec (said when --codec differs).
    image_digests: each image file's content digest (extract/sources.py), kept in the store."""
    samples = viewed(cfg, refs) if samples is None else samples
    inputs = dict(extractor.fingerprint_inputs)
    views = samples.record()
    if views is not None:
        inputs["views"] = views  # what the store holds; not what its features are
    fp = fingerprint(inputs)
    url = store_url(cfg.cache_root or default_cache_root(), cfg.dataset, cfg.split, fp, data_key)
    store = FeatureStore.create_or_open(
        url, fingerprint=fp, fingerprint_inputs=inputs, dataset=cfg.dataset, split=cfg.split,
        root=str(Path(cfg.root).resolve()), ids=samples.ids(), levels=extractor.levels, resolution=cfg.resolution,
        preprocessing=preprocessing_record(cfg.resolution), precision=cfg.precision, shard_size=cfg.shard_size,
        ids_digest=cfg.ids_digest(), data_key=data_key, views=samples.layout.attrs(), codec=cfg.codec,
        image_digests=image_digests,
    )
    note = codec_note(cfg, store)
    if note and log is not None:
        log(note)
    return store


def codec_note(cfg: ExtractConfig, store: FeatureStore) -> str | None:
    """The line that says an explicit --codec does not apply to an existing store of another codec."""
    if cfg.codec is None or store.codec == cfg.codec:
        return None
    return (f"--codec {cfg.codec}: {store.url} exists with codec {store.codec}; its samples are written with "
            f"{store.codec} (a store never mixes codecs; another --cache-root makes a new {cfg.codec} store)")


def planned_indices(cfg: ExtractConfig, store: FeatureStore) -> np.ndarray:
    """Missing samples; with --limit N, those of the first N images (in every view)."""
    missing = store.missing_indices()
    return missing if cfg.limit is None else store.layout.of_images(missing, cfg.limit)


def sample_loader(cfg: ExtractConfig, reader, samples, indices, batch_size: int, pin: bool = False):
    """Extraction's decode loader: batches of letterboxed uint8 images (each view drawn in its original's frame,
    then letterboxed) and their masks, i.e. exactly what the backbone and the store receive."""
    views = samples.layout.num_views > 1
    return decode_loader(reader, samples, indices, cfg.resolution, batch_size, cfg.workers, pin=pin,
                         transform=samples.transform if views else None, ids=samples.ids() if views else None)


def resolve_batch_size(cfg: ExtractConfig, extractor) -> int:
    """--batch-size, or for auto the probed batch: probed once per loaded extractor (a Dask worker runs
    extract_shards once per shard task with the same extractor)."""
    if cfg.batch_size != "auto":
        return int(cfg.batch_size)
    if getattr(extractor, "auto_batch", None) is None:
        from hairdiff.extract.acceleration import probe_batch_size

        extractor.auto_batch = probe_batch_size(extractor)
    return extractor.auto_batch


def extract_shards(cfg: ExtractConfig, reader, refs, extractor, store: FeatureStore, indices: np.ndarray,
                   advance=None, stats: ExtractStats | None = None, log=print, samples=None) -> ExtractStats:
    """Compute and write `indices` (missing samples) through the overlapped pipeline.

    The device stage is asynchronous: batch i+1 is launched before batch i is collected. Each shard is
    claimed before its first sample. On a stop (bad input with --on-error stop, Ctrl-C, a failed write)
    the batch in flight is finished and every shard with computed samples is written before the error goes up.
    """
    run = _ShardRun(cfg, reader, refs, extractor, store, indices, advance,
                    stats or ExtractStats(store=store.url), log, samples)
    error = None
    try:
        run.feed()
    except BaseException as e:  # Ctrl-C included: what was computed is kept first, then the error goes up
        error = e
        run.salvage(e)
    finally:
        failed = run.close()
    if error is not None:
        raise error
    if failed is not None:
        raise failed
    return run.stats


class _ShardRun:
    """One pass of extract_shards: the loader, the device stage, the shard assembler and the writer pool."""

    def __init__(self, cfg, reader, refs, extractor, store, indices, advance, stats, log, samples):
        self.cfg, self.store, self.advance, self.stats, self.log = cfg, store, advance, stats, log
        self.device = extractor.bb.device
        self.cuda = self.device.type == "cuda"
        self.clock = StageClock(self.device)
        by_shard: dict[int, list[int]] = {}
        for i in indices:
            by_shard.setdefault(store.shard_of(int(i)), []).append(int(i))
        batch_size = stats.batch_size or resolve_batch_size(cfg, extractor)
        self.compute = ComputeStage(extractor, self.device, batch_size, self.clock, cfg.channels_last)
        codec_threads(cfg.writers)
        self.writers = WriterPool(cfg.writers)
        self.asm = ShardAssembler(store, by_shard, stats, self.clock, self.writers, pin=self.cuda)
        self.loader = sample_loader(cfg, reader, viewed(cfg, refs) if samples is None else samples, indices,
                                    batch_size, pin=self.cuda)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.pending, self.decode_s, self.collected = None, 0.0, 0
        self.t0 = time.perf_counter()

    def feed(self) -> None:
        """Every batch of the loader: launched on the device, the previous one collected meanwhile."""
        batches = iter(self.loader)
        while True:
            with self.clock.host("wait_loader"):
                b = next(batches, None)
            if b is None:
                break
            good, rows = self._admit(b)
            launched = None
            if good:
                images = b.images if rows == list(range(len(b.ok))) else b.images[rows]
                launched = self.compute.launch(images, [self.asm.destination(s, d.index) for s, d in good])
            if self.pending is not None:
                self._collect(self.pending)  # the previous batch, while this one runs on the device
            self.pending = (launched, good, len(b.items))
            self.writers.raise_errors()
        if self.pending is not None:
            p, self.pending = self.pending, None
            self._collect(p)
        self.asm.flush(everything=True)  # shards whose remaining samples were all skipped

    def _admit(self, b) -> tuple[list, list]:
        """The decoded samples of batch `b` that go to the device (with their rows in b.images); a sample that
        could not be decoded stops the run or, with --on-error skip, is recorded as skipped."""
        good, rows = [], []
        for pos, d in enumerate(b.items):
            self.decode_s += d.seconds
            shard = self.asm.admit(d)
            if shard is None:
                continue
            if d.error is not None:
                if self.cfg.on_error == "stop":
                    raise BadInputStop(d.error)
                self.asm.skipped(shard, d, d.error)
                self.log(f"skipped {d.error}")
                continue
            good.append((shard, d))
            rows.append(b.ok.index(pos))
        return good, rows

    def _collect(self, p) -> None:
        launched, good, n_items = p
        failures = {f.position: f.reason for f in self.compute.finish(launched)} if launched is not None else {}
        for j, (shard, d) in enumerate(good):
            if j not in failures:
                self.asm.computed(shard, d)
                self.collected += 1
            elif self.cfg.on_error == "stop":
                raise BadInputStop(f"{d.id}: {failures[j]}")
            else:
                self.asm.skipped(shard, d, failures[j])
                self.log(f"skipped {d.id}: {failures[j]}")
        self.asm.flush()
        if self.advance is not None:
            self.advance(n_items, f"{self.collected / max(time.perf_counter() - self.t0, 1e-9):.2f} img/s")

    def salvage(self, error: BaseException) -> None:
        """After `error`: finish the batch in flight and write every shard holding computed samples. A failure of
        the batch in flight itself (often the same cause) loses only that batch, and is said."""
        try:
            if self.pending is not None:
                self._collect(self.pending)
        except BaseException as e:
            self.log(f"the batch in flight when the run stopped ({type(error).__name__}) was not kept: {e}")
        self.asm.flush(everything=True)

    def close(self) -> BaseException | None:
        """Drain and close the writers, release the claims, fill the stats; the first failed write, if any."""
        failed = self.writers.drain()
        self.writers.close()
        self.asm.release()
        stats = self.stats
        stats.seconds += time.perf_counter() - self.t0
        stats.batch_size, stats.writers = self.compute.micro, self.cfg.writers
        stats.recomputed = dict(self.compute.recomputed)
        stage = {**self.clock.totals(), "decode": self.decode_s, **self.store.io_seconds}
        stats.stage_seconds = {k: round(v, 4) for k, v in sorted(stage.items())}
        if self.cuda:
            stats.gpu_busy_fraction = stage.get("busy", 0.0) / max(stats.seconds, 1e-9)
            stats.gpu_memory_peak_gb = torch.cuda.max_memory_allocated(self.device) / 2**30
        return failed


def write_report(path: Path, cfg: ExtractConfig, stats: ExtractStats) -> None:
    atomic_write_json(path, {"config": to_dict(cfg), **asdict(stats), "images_per_s": stats.images_per_s},
                      indent=2)


def _writable(folder: Path) -> str | None:
    """None when a file can be made in `folder`, else why not."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as e:
        return e.strerror or str(e)


def check_root_writable(cfg: ExtractConfig, key: str) -> None:
    """Before the model loads: the store of these images will be written under an existing local cache root
    unless a complete one is there already (a shared, read-only cache serves its complete stores). A root where
    nothing can be written and no complete store of these images is found is refused now (UsageError), not at
    the first write after loading the model. (Which of the stores found is this one, the fingerprint says after
    loading: one of other settings is still refused then, at its first write.)"""
    from hairdiff.core.errors import HairdiffError, UsageError
    from hairdiff.core.urls import is_remote, local_path

    root = cfg.cache_root or default_cache_root()
    if is_remote(root) or not Path(local_path(root)).is_dir():
        return  # object stores say so at the first write; a root to be made was checked by check_cache_root
    folder = Path(local_path(root)) / cfg.dataset / cfg.split
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    reason = _writable(existing)
    if reason is None:
        return
    for store in sorted(folder.glob(store_name("*", key))) if folder.is_dir() else []:  # these files, any settings
        try:
            if not len(planned_indices(cfg, FeatureStore.open(str(store)))):
                return  # complete for this command: reused, nothing written
        except HairdiffError:
            continue
    raise UsageError(f"cannot write to the cache root {root} ({reason}) and it holds no complete store of these "
                     f"images to reuse (in {folder}): pass --cache-root to a writable folder or set HAIRDIFF_CACHE")


def run_local(cfg: ExtractConfig, stats: ExtractStats, progress: ProgressFactory = silent, log=print,
              extractor=None) -> None:
    """The whole single-process extraction: list samples, key the data, load the model, open the store, fill it.
    `extractor`: one built by build_extractor(cfg) already (benchmarks reuse one)."""
    from hairdiff.extract.sources import source_digests

    reader, refs = list_refs(cfg)
    stats.no_hair = sum(r.no_hair for r in refs)
    key, image_digests = source_digests(refs)
    cfg.check_cache_root()
    check_root_writable(cfg, key)
    if cfg.workers > 0:
        worker_start()  # a TMPDIR the decode workers cannot use is said before the model loads
    if extractor is None:
        log(f"{len(refs)} samples in {cfg.dataset}/{cfg.split}; loading model {cfg.model} ...")
        extractor = build_extractor(cfg)
    samples = viewed(cfg, refs)  # the recipe, parsed once for the run
    store = open_store(cfg, extractor, refs, key, samples, log=log, image_digests=image_digests)
    todo = planned_indices(cfg, store)
    stats.store, stats.planned = store.url, len(todo)
    layout = store.layout
    planned = layout.num_samples if cfg.limit is None else min(cfg.limit, layout.num_images) * layout.num_views
    stats.reused = int(planned - len(todo))
    if len(todo) and cfg.compile:
        from hairdiff.extract.acceleration import warm_up

        stats.batch_size = resolve_batch_size(cfg, extractor)
        stats.warmup_seconds = warm_up(extractor, stats.batch_size)
    with progress(f"extract {cfg.dataset}/{cfg.split}", len(todo), 0) as advance:
        extract_shards(cfg, reader, refs, extractor, store, todo, advance=advance, stats=stats, log=log,
                       samples=samples)
