"""What `pipeline extract` does, as one dataclass: its fields are the command's options.

Everything is checked when the config is built, before any dataset, model or store is touched.
"""
from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from hairdiff.core.devices import DTYPE_NAMES, check_device, check_dtype
from hairdiff.core.errors import UsageError
from hairdiff.core.fields import LOCAL, MAX_BATCH, MAX_THREADS, URL, at_least, at_most, check_paths, option, seed_range
from hairdiff.core.recipe import FULL
from hairdiff.core.urls import local_option
from hairdiff.extract.readers.ids import SYNTAX as IDS_SYNTAX
from hairdiff.extract.readers.registry import names

Precision = Literal["fp16", "int8"]
OnError = Literal["stop", "skip"]


def default_writers() -> int:
    """Compression is the host's heaviest work: every core but the ones decoding and feeding the device."""
    return min(MAX_THREADS, max(1, (os.cpu_count() or 2) - 2))


MAX_RESOLUTION = 4096  # 64x the pixels of SD 1.x's 512: a sample's features are held whole in memory
MAX_SHARD = 256  # samples per shard file (default 16): shard buffers are held whole in memory

# The SD 1.x family trains on 1000 steps; the loaded scheduler's own count is checked again after loading.
MAX_TIMESTEP = 999


def check_scheduler(scheduler: str | None) -> None:
    """UsageError unless --scheduler is absent, local:N or a scheduler address (tcp:// or tls://)."""
    if scheduler and not (re.fullmatch(r"local:[1-9]\d*", scheduler) or scheduler.startswith(("tcp://", "tls://"))):
        raise UsageError(f"--scheduler {scheduler!r}: use local:N (N worker processes) or tcp://HOST:PORT")
    if scheduler and scheduler.startswith("local:") and int(scheduler[6:]) > MAX_THREADS:
        raise UsageError(f"--scheduler {scheduler}: use local:N with N at most {MAX_THREADS} (worker processes of "
                         "this machine)")


def canonical_prompt(text: str) -> str:
    """A prompt as the text encoder reads it: Unicode NFC, a leading byte-order mark dropped, surrounding
    whitespace stripped and inner runs of whitespace made one space (SD's CLIP tokenizer does the same before it
    tokenizes, so spellings that differ only so give the same features and must name the same store). Case is
    kept: the recorded prompt stays the one the user wrote."""
    text = unicodedata.normalize("NFC", str(text)).lstrip("\ufeff")
    return " ".join(text.split())


@dataclass(kw_only=True)
class ExtractConfig:
    dataset: str = option(help=f"the dataset's layout: {' | '.join(names())} (extract/readers/)")
    root: str = option(help="dataset root in its published layout", path=LOCAL)
    split: str | None = option(None, help="a split of the dataset (an unknown one is refused, naming the "
                                           "dataset's splits). Default: all, or the paper's training split")
    model: str = option(FULL.model, help="hub id, local diffusers folder, .safetensors/.ckpt file, or 'tiny' (not a "
                                          "URL)")
    revision: str | None = option(None, help="hub revision (branch, tag or commit)")
    prompt: str = option(FULL.prompt, help="text conditioning of the UNet (read as its text encoder reads it: "
                                           "surrounding or repeated whitespace and a byte-order mark do not count)")
    timestep: int = option(FULL.timestep, help=f"diffusion timestep the latent is noised to (0..{MAX_TIMESTEP})")
    resolution: int = option(FULL.resolution, help="images are letterboxed to RESOLUTION x RESOLUTION (a multiple of 64)")
    taps: str = option(FULL.taps, help="'unet' (decoder levels), 'odise', or comma-separated module names")
    dtype: str = option("auto", help="auto (fp16 on CUDA, fp32 on CPU) | float16 | bfloat16 | float32")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    batch_size: str = option("8", help="images per forward pass (halved automatically on out-of-memory), or "
                                       "'auto': the largest that fits, found by probing once (8 on a CPU)")
    workers: int = option(2, help="decoding/resizing worker processes")
    writers: int = option(factory=default_writers, help="threads compressing and writing whole shards "
                                                        "(default: the cores left after decoding)")
    compile: bool = option(False, help="torch.compile the backbone's blocks (a warm-up first, reported apart)")
    channels_last: bool = option(True, help="channels-last memory layout for the convolutions")
    sdpa: bool = option(True, help="PyTorch's fused scaled-dot-product attention (off: plain attention)")
    limit: int | None = option(None, help="only the first N samples in id order")
    ids_file: str | None = option(None, flag="--ids", help=f"file of the sample ids to extract: {IDS_SYNTAX}",
                                  path=LOCAL)
    cache_root: str | None = option(None, path=URL, help="where stores live; "
                                               "default $HAIRDIFF_CACHE or ~/.cache/hairdiff")
    precision: Precision = option("fp16", help="stored precision: fp16 (lossless) | int8 (per-channel)")
    codec: str | None = option(None, help="features' compression in a NEW store: lz4 (default; fastest to write "
                                          "and read) | zstd (~2% smaller, 4-5x slower to encode). Not part of the "
                                          "fingerprint: an existing store keeps its own codec")
    shard_size: int = option(16, help="samples per shard file")
    seed: int = option(FULL.seed, help="seed of the one fixed noise tensor (and of the views' random draws)")
    views: str | None = option(None, help="augmented views extracted besides each image: flip, scale:S1,S2,.., "
                                          "lsj:K (ODISE's large-scale jitter), color:K (Mask2Former's colour "
                                          "jitter), joined by '+' (e.g. flip+scale:0.5,0.75,1.25,1.5; see "
                                          "extract/views.py)")
    on_error: OnError = option("stop", help="stop: stop at the first bad file; skip: report it and go on")
    scheduler: str | None = option(None, help="Dask: local:N (N worker processes) or tcp://HOST:PORT")
    report: str | None = option(None, help="JSON report path (default under the local cache folder)", path=LOCAL)

    def __post_init__(self):
        check_paths(self)
        self.model = local_option(self.model, "--model")
        if str(self.batch_size).isdigit() or isinstance(self.batch_size, int):
            self.batch_size = int(self.batch_size)
        from hairdiff.extract.views import canonical_views

        # Normalised once, here: the store's fingerprint and every record take these spellings.
        self.prompt = canonical_prompt(self.prompt)
        self.views = canonical_views(self.views)
        self.validate()

    def validate(self) -> None:
        """UsageError naming the first bad option; touches no file, model or store."""
        from hairdiff.extract.taps import check_tap_spec

        if self.dataset not in names():
            raise UsageError(f"--dataset {self.dataset!r}: use one of {', '.join(names())}")
        if self.resolution < 64 or self.resolution % 64 or self.resolution > MAX_RESOLUTION:
            raise UsageError(f"--resolution {self.resolution}: use a multiple of 64 from 64 (the UNet downsamples "
                             f"64x) to {MAX_RESOLUTION} (every sample is held whole in memory), e.g. 512")
        if not 0 <= self.timestep <= MAX_TIMESTEP:
            raise UsageError(f"--timestep {self.timestep}: use 0..{MAX_TIMESTEP} (the diffusion schedule's steps; "
                             f"the paper uses 0)")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= MAX_BATCH):
            raise UsageError(f"--batch-size {self.batch_size}: use a number from 1 to {MAX_BATCH}, or auto")
        at_least(self, 1, "shard_size", "writers", "limit")
        at_least(self, 0, "workers")
        at_most(self, MAX_SHARD, "a shard is assembled and written whole from memory", "shard_size")
        at_most(self, MAX_THREADS, "each is a process or thread of this machine", "workers", "writers")
        seed_range(self, "seed")
        if self.precision not in ("fp16", "int8"):
            raise UsageError(f"--precision {self.precision!r}: use fp16 or int8")
        if self.codec is not None:
            from hairdiff.cache.codecs import check_codec

            check_codec(self.codec)
        if self.on_error not in ("stop", "skip"):
            raise UsageError(f"--on-error {self.on_error!r}: use stop or skip")
        if self.dtype not in DTYPE_NAMES:
            check_dtype(self.dtype)
        check_device(self.device)
        check_tap_spec(self.taps)
        from hairdiff.extract.views import parse_views

        parse_views(self.views)
        check_scheduler(self.scheduler)

    def ids_digest(self) -> str | None:
        """An explicit --ids selection is told apart by its file's digest (kept as a store attribute)."""
        import hashlib
        from pathlib import Path

        return hashlib.sha256(Path(self.ids_file).read_bytes()).hexdigest()[:8] if self.ids_file else None

    def check_cache_root(self) -> None:
        """A cache root that does not exist yet must be creatable: found before any model is loaded. An existing
        one may be read-only (a shared cache) when it holds a complete store of the images: runner's
        check_root_writable says so before the model loads too. A URL's fsspec backend must be installed."""
        import tempfile
        from pathlib import Path

        from hairdiff.cache import default_cache_root
        from hairdiff.core.urls import filesystem, is_remote, local_path, remote_access, require_backend

        root = self.cache_root or default_cache_root()
        if is_remote(root):
            require_backend(root, "--cache-root" if self.cache_root else "HAIRDIFF_CACHE")
            fs, base = filesystem(root)
            with remote_access(root, "reach the cache root"):  # credentials and network, before the model loads
                fs.exists(base)
            return  # a read-only object store says so on the first write, with the URL
        path = Path(local_path(root))
        if path.is_dir():
            return
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        try:
            if existing is None or not existing.is_dir():
                raise OSError(f"{existing} is not a folder")
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise UsageError(f"cannot write to the cache root {root} ({reason}): pass --cache-root to a writable "
                             f"folder or set HAIRDIFF_CACHE") from None
