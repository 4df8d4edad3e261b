"""The feature store: one Zarr v3 group per (dataset, split, fingerprint, data).

Layout: ``features/<level>`` [N, C, H, W] float16 (or int8 + ``features/<level>__scale``/``__offset``
[N, C] float32), one sample per chunk, ``shard_size`` samples per shard file; ``masks`` [N, R, R] uint8
(training masks at feature-input resolution, 255 = ignore); ``labels`` [N] PNG bytes (the annotation at
its own resolution, exact); ``ids`` [N] str; ``orig_sizes``/``label_sizes`` [N, 2] int32; ``digests``
[N, levels + 3] uint32 (cache/digests.py); ``done`` [N] uint8 chunked by shard. Features are compressed
with the codec named at creation (cache/codecs.py, attr ``codec``); writes and reads follow the codec the
store's own arrays declare, so stores of either codec (and those written before the choice) read the same.

Crash-safety invariant: a sample flagged done always reads back exactly, or its read fails loudly.
Shards are written whole (zarr's LocalStore writes a key through a temporary file and a rename, object
stores replace objects whole), and done flags are written after the data. Rewriting a shard that already
holds done samples first clears their flags, so a crash in between leaves them missing (recomputed),
never wrong. Every read of a done sample checks its digests (stores written before digests existed: that
its shard files exist), so a lost or corrupt shard is an error naming the sample, never zeros.

Reads of the sharded arrays and of the small per-sample arrays go through cache/shard_codec.py (decoded in
the reader's thread, outside the GIL); anything laid out otherwise is read by zarr itself.
"""
from __future__ import annotations

import io
import threading
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

import numpy as np
import zarr
from PIL import Image

from hairdiff.cache import digests as dg
from hairdiff.cache import dimensions as dims
from hairdiff.cache import shard_codec
from hairdiff.cache.codecs import DEFAULT_CODEC, array_codec, checksum_only, feature_compressors, small_compressors
from hairdiff.cache.fingerprint import SCHEMA_VERSION, features_fingerprint
from hairdiff.cache.layout import ViewLayout
from hairdiff.cache.levels import LevelSpec
from hairdiff.cache.quantize import PRECISIONS, dequantize_int8, quantize_int8, stored_dtype
from hairdiff.core.errors import (CorruptSampleError, ReadOnlyStoreError, SchemaVersionError, StoreMetadataError,
                                  StoreMismatchError, StoreNotFoundError, StoreWriteError, UsageError)
from hairdiff.core.labels import IGNORE
from hairdiff.core.urls import filesystem, is_remote, local_path, remote_access, require_backend
from hairdiff.core.versions import versions

warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
# Whole shards are written at once: checking each chunk against the fill value first (zarr's default) and
# encoding one chunk per batch cost more than half of the write time (bench/host_pipeline.py, BENCHMARKS.md).
zarr.config.set({"array.write_empty_chunks": True, "codec_pipeline.batch_size": 64})


def codec_threads(n: int | None) -> None:
    """Run zarr's codecs (compression, checksums) on `n` threads (None: zarr's default, cores + 4).

    zarr encodes every chunk on one process-wide thread pool, whatever thread asked: sizing it to the
    extraction's --writers makes the writers the unit of parallelism (and leaves the other cores to decoding).
    """
    if zarr.config.get("threading.max_workers", None) == n:
        return
    zarr.config.set({"threading.max_workers": n})  # read when zarr makes its pool, on first use
    from zarr.core import sync

    old = getattr(sync, "_executor", None)
    if old is None:
        return
    # Already made: hand zarr's running loop a pool of the new size. (Restarting zarr's loop instead would
    # strand the fsspec filesystems bound to it: object-store stores would fail with "Event loop is closed".)
    from concurrent.futures import ThreadPoolExecutor

    sync._executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="zarr_pool")
    sync._get_loop().set_default_executor(sync._executor)
    old.shutdown(wait=False)


def _zarr_store(url: str, read_only: bool):
    if is_remote(url):
        require_backend(url)  # a missing s3fs is one line naming it, never "damaged metadata"
        return zarr.storage.FsspecStore.from_url(url, read_only=read_only)
    return zarr.storage.LocalStore(local_path(url), read_only=read_only)


def _meta(url: str, path: str = "") -> str:
    """The metadata file of the group (path "") or of an array."""
    return "/".join(p for p in (str(url).rstrip("/"), path, "zarr.json") if p)


def _check_reachable(url: str) -> None:
    """StoreAccessError when the store's metadata cannot be fetched for a reason other than its absence (no
    credentials, no network, no permission): what cannot be read is never called missing or damaged."""
    if not is_remote(url):
        return  # local errors are OSErrors, named below
    fs, base = filesystem(url)
    try:
        with remote_access(url, "read the feature store"):  # botocore's NoCredentialsError, a timeout, access denied
            fs.info(_meta(base))
    except FileNotFoundError:
        return  # absent: said below (no store, or arrays without their group)


def _open_group(url: str, writable: bool) -> zarr.Group:
    """The store's root group. Read-only first (never creating a folder); a writable handle only once the
    group is known to exist. Errors name the store or its zarr.json; an object store's failure is first asked
    whether the store could be reached at all (asked only then: an open that works costs no extra request)."""
    try:
        return zarr.open_group(_zarr_store(url, read_only=not writable), mode="r+" if writable else "r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        _check_reachable(url)
        fs, base = filesystem(url)
        if any(fs.exists(f"{base.rstrip('/')}/{a}/zarr.json") for a in ("done", "ids")):  # arrays without a group
            raise StoreMetadataError(url, [(_meta(url), "missing")]) from None
        raise StoreNotFoundError(f"no feature store at {url}: run `pipeline extract` first, or check the "
                                 "path (`pipeline cache ls` lists stores)") from e
    except zarr.errors.ContainsArrayError:
        raise StoreMetadataError(url, [(_meta(url), "describes an array, not the store's group")]) from None
    except OSError as e:  # permissions, a file where the folder should be, a network error
        _check_reachable(url)
        raise StoreNotFoundError(f"cannot open the feature store {url} ({e.strerror or e}): check the path and "
                                 "that it is readable") from None
    except Exception as e:  # JSON that does not parse, or metadata zarr rejects (or a client's own error)
        _check_reachable(url)
        raise StoreMetadataError(url, [(_meta(url), f"does not decode ({type(e).__name__}: {str(e)[:80]})")]) from None


IMAGE_DIGESTS = "image_digests"
IMAGE_DIGESTS_ATTR = {"algorithm": "sha256", "of": "each image's file, in image order"}


def _write_image_digests(g: zarr.Group, digests: list[str]) -> None:
    n = len(digests)
    arr = g.create_array(IMAGE_DIGESTS, shape=(n,), dtype=str, chunks=(max(1, n),), compressors=checksum_only(),
                         overwrite=True, dimension_names=dims.IMAGES)
    arr[:] = np.array(list(digests), dtype=object)


def _create_digest_table(g: zarr.Group, n: int, shard_size: int, cols: list[str]) -> zarr.Array:
    """The per-sample digest table (new stores, and old ones given digests by `add_digests`)."""
    return g.create_array("digests", shape=(n, len(cols)), dtype="uint32", chunks=(shard_size, len(cols)),
                          compressors=checksum_only(), fill_value=0, overwrite=True, dimension_names=dims.DIGESTS)


def _png(label: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class FeatureStore:
    def __init__(self, url: str, group: zarr.Group, writable: bool):
        self.url, self.group, self.writable = str(url), group, writable
        a = dict(group.attrs)
        self.attrs = a
        self.fingerprint: str = a["fingerprint"]
        self.fingerprint_inputs: dict = a["fingerprint_inputs"]
        # Equal to `fingerprint` for stores without views (all stores written before views existed).
        self.features_fingerprint: str = (features_fingerprint(self.fingerprint_inputs)
                                          if "views" in self.fingerprint_inputs else self.fingerprint)
        self.dataset: str = a["dataset"]
        self.split: str = a["split"]
        self.ids_digest: str | None = a.get("ids_digest")
        if self.ids_digest is None and "-ids-" in self.split:  # stores written before ids_digest was an attribute
            self.split, self.ids_digest = self.split.rsplit("-ids-", 1)
        self.data_key: str | None = a.get("data_key")
        self.root: str = a["root"]
        self.resolution: int = a["resolution"]
        self.precision: str = a.get("precision", "fp16")
        self.shard_size: int = a["shard_size"]
        self.levels = [LevelSpec(**d) for d in a["levels"]]
        self.num_samples: int = a["num_samples"]
        self.has_digests: bool = bool(a.get("digests"))
        # Views (extract/views.py): which image and view each sample is, cache/layout.py answers.
        self.views: dict | None = a.get("views")
        self.layout = ViewLayout.from_attrs(self.views, self.num_samples, url)
        self.num_images: int = self.layout.num_images
        self._ids: list[str] | None = None
        self._image_digests: list[str] | None = None
        # Content digests of each image's file (sha256), in image order: stores written before them have none.
        self.has_image_digests: bool = bool(a.get("image_digests"))
        self._present: set[tuple[str, int]] = set()  # (array, shard) found on disk, for stores without digests
        self._arrays: dict = {}  # opened once: each `group[name]` reads the array's metadata
        # Seconds writer threads spent compressing and writing shard files (extraction's stage report).
        self.io_seconds = {"compress": 0.0, "write": 0.0}
        self._io_lock = threading.Lock()

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn or a fork server (macOS, Windows; Python 3.14's default) get the store
        # pickled: everything but the writers' lock, which each copy makes anew.
        return {k: v for k, v in self.__dict__.items() if k != "_io_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._io_lock = threading.Lock()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, url: str, mode: str = "r") -> "FeatureStore":
        """Open a store; every metadata document it needs (the group's zarr.json and attributes, each array's
        zarr.json) is read and checked here, so a damaged one is a StoreMetadataError naming the file, never a
        traceback later. Opening never creates anything: a missing store is a StoreNotFoundError."""
        if mode not in ("r", "r+"):
            raise ValueError(f"mode {mode!r}: use 'r' (read-only) or 'r+'")
        url = str(url)
        group = _open_group(url, writable=False)
        version = group.attrs.get("schema_version")
        if version is None or "fingerprint" not in group.attrs:
            raise StoreNotFoundError(f"{url} is a Zarr group but not a hairdiff feature store")
        if not isinstance(version, int):
            raise StoreMetadataError(url, [(_meta(url), f"schema_version {version!r} is not a number")])
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(f"{url} was written by a newer hairdiff (store schema {version}, this one "
                                     f"reads up to {SCHEMA_VERSION}): upgrade hairdiff to read it")
        try:
            store = cls(url, group, writable=False)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"attribute {e}" if isinstance(e, KeyError) else f"attributes ({type(e).__name__}: {e})"
            raise StoreMetadataError(url, [(_meta(url), f"{what} missing or malformed")]) from None
        problems = store.metadata_problems()
        if problems:
            raise StoreMetadataError(url, problems)
        if mode == "r+":
            store.group, store.writable = _open_group(url, writable=True), True
        return store

    def array_paths(self) -> list[str]:
        """Every array this store's attributes say it has."""
        paths = [f"features/{lv.key}" for lv in self.levels]
        if self.precision == "int8":
            paths += [f"features/{lv.key}__{part}" for lv in self.levels for part in ("scale", "offset")]
        return paths + ["masks", "labels", "ids", "orig_sizes", "label_sizes", "done"] + (
            ["digests"] if self.has_digests else []) + ([IMAGE_DIGESTS] if self.has_image_digests else [])

    def metadata_problems(self) -> list[tuple[str, str]]:
        """(file, what is wrong) for each array whose zarr.json is missing, does not decode, or disagrees with
        the store's sample count: one metadata read per array."""
        problems = []
        for path in self.array_paths():
            try:
                arr = self.group[path]
            except KeyError as e:  # zarr: the node is absent, or a required metadata field is
                problems.append((_meta(self.url, path), "missing" if str(e).strip("'") == path
                                 else f"does not decode (field {e} missing)"))
                continue
            except Exception as e:  # JSON that does not parse, or metadata zarr rejects
                problems.append((_meta(self.url, path), f"does not decode ({type(e).__name__}: {str(e)[:80]})"))
                continue
            if not isinstance(arr, zarr.Array):
                problems.append((_meta(self.url, path), "describes a group, not an array"))
            elif not arr.shape or arr.shape[0] != (rows := self.num_images if path == IMAGE_DIGESTS else
                                                   self.num_samples):
                what = "images" if path == IMAGE_DIGESTS else "samples"
                problems.append((_meta(self.url, path), f"shape {arr.shape}, not {rows} {what} as the store's "
                                                        f"attributes say"))
        return problems

    @classmethod
    def create_or_open(cls, url: str, *, fingerprint: str, fingerprint_inputs: dict, dataset: str, split: str,
                       root: str, ids: list[str], levels: list[LevelSpec], resolution: int, preprocessing: dict,
                       precision: str = "fp16", shard_size: int = 16, ids_digest: str | None = None,
                       data_key: str | None = None, views: dict | None = None,
                       codec: str | None = None, image_digests: list[str] | None = None) -> "FeatureStore":
        """codec: the features' codec of a new store (None: DEFAULT_CODEC). An existing store keeps its own
        (not part of what it holds): compare `store.codec` to say so. image_digests: the content digest of each
        image's file, in image order (extract/sources.py); an existing store of the same data without them gets
        them (when it can be written)."""
        url = str(url)
        if precision not in PRECISIONS:
            raise UsageError(f"--precision {precision!r}: use {' or '.join(PRECISIONS)}")
        feature_compressors(codec or DEFAULT_CODEC)  # a bad name is refused before any store is touched
        try:
            store = cls.open(url, mode="r+")
        except StoreNotFoundError:
            store = None
        if store is not None:
            # The URL carries the fingerprint and the data key: a clash here is a store holding other data,
            # which is never ours to replace.
            if store.fingerprint != fingerprint:
                raise StoreMismatchError(
                    f"{url} holds features with fingerprint {store.fingerprint[:16]}, not {fingerprint[:16]} "
                    "(another extraction's data): pass another --cache-root")
            if store.ids != list(ids) or (data_key and store.data_key and store.data_key != data_key):
                raise StoreMismatchError(f"{url} holds another sample list or other source files "
                                         f"({store.num_samples} samples, data {str(store.data_key)[:16]}): "
                                         "pass another --cache-root")
            if image_digests is not None and not store.has_image_digests and store.data_key == data_key:
                store._record_image_digests(image_digests)
            return store
        try:
            return cls._create(url, fingerprint, fingerprint_inputs, dataset, split, root, list(ids), levels,
                               resolution, preprocessing, precision, shard_size, ids_digest, data_key, views,
                               codec or DEFAULT_CODEC, image_digests)
        except OSError as e:
            raise StoreWriteError(f"cannot create the store {url} ({e.strerror or e}): pass a writable "
                                  "--cache-root") from None

    @classmethod
    def _create(cls, url, fp, inputs, dataset, split, root, ids, levels, resolution, preprocessing, precision,
                shard_size, ids_digest, data_key, views, codec, image_digests) -> "FeatureStore":
        n, s = len(ids), shard_size
        g = zarr.open_group(_zarr_store(url, read_only=False), mode="a")
        for lv in levels:
            g.create_array(f"features/{lv.key}", shape=(n, lv.channels, lv.height, lv.width),
                           dtype=np.dtype(stored_dtype(precision)).name, chunks=(1, lv.channels, lv.height, lv.width),
                           shards=(s, lv.channels, lv.height, lv.width), compressors=feature_compressors(codec),
                           fill_value=0, overwrite=True, attributes={"tap": lv.name, "stride": lv.stride},
                           dimension_names=dims.level(lv))
            if precision == "int8":
                for part in ("scale", "offset"):
                    g.create_array(f"features/{lv.key}__{part}", shape=(n, lv.channels), dtype="float32",
                                   chunks=(s, lv.channels), compressors=checksum_only(), fill_value=0, overwrite=True,
                                   dimension_names=dims.level(lv)[:2])
        g.create_array("masks", shape=(n, resolution, resolution), dtype="uint8", chunks=(1, resolution, resolution),
                       shards=(s, resolution, resolution), compressors=small_compressors(), fill_value=IGNORE,
                       overwrite=True, dimension_names=dims.MASKS)
        from zarr.core.dtype import VariableLengthBytes

        g.create_array("labels", shape=(n,), dtype=VariableLengthBytes(), chunks=(s,), compressors=checksum_only(),
                       overwrite=True, dimension_names=dims.SAMPLE)
        for name in ("orig_sizes", "label_sizes"):
            g.create_array(name, shape=(n, 2), dtype="int32", chunks=(s, 2), compressors=checksum_only(),
                           fill_value=0, overwrite=True, dimension_names=dims.SIZES)
        cols = dg.columns([lv.key for lv in levels])
        _create_digest_table(g, n, s, cols)
        g.create_array("done", shape=(n,), dtype="uint8", chunks=(s,), compressors=checksum_only(), fill_value=0,
                       overwrite=True, dimension_names=dims.SAMPLE)
        ids_arr = g.create_array("ids", shape=(n,), dtype=str, chunks=(max(1, n),), compressors=checksum_only(),
                                 overwrite=True, dimension_names=dims.SAMPLE)
        ids_arr[:] = np.array(ids, dtype=object)
        if image_digests is not None:
            _write_image_digests(g, image_digests)
        # Attributes last: a store without them is not a store yet, so a crash here just recreates it.
        g.attrs.update({
            "schema_version": SCHEMA_VERSION, "fingerprint": fp, "fingerprint_inputs": inputs, "dataset": dataset,
            "split": split, "ids_digest": ids_digest, "data_key": data_key, "views": views, "root": str(root),
            "levels": [lv.to_dict() for lv in levels], "resolution": resolution, "preprocessing": preprocessing,
            "precision": precision, "codec": codec, "shard_size": s, "num_samples": n,
            "digests": {"algorithm": "crc32c", "columns": cols},
            "image_digests": IMAGE_DIGESTS_ATTR if image_digests is not None else None,
            "versions": versions(("zarr", "numcodecs", "numpy", "torch")),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        return cls.open(url, mode="r+")

    # ------------------------------------------------------------------ bookkeeping
    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = [str(x) for x in self.group["ids"][:]]
        return self._ids

    @property
    def image_digests(self) -> list[str] | None:
        """The content digest (sha256 of the file) of each image, in image order; None for a store written
        before them. Two stores hold one photo exactly when they share a digest, whatever its id or folder."""
        if not self.has_image_digests:
            return None
        if self._image_digests is None:
            self._image_digests = [str(x) for x in self.group[IMAGE_DIGESTS][:]]
        return self._image_digests

    def _record_image_digests(self, digests: list[str]) -> None:
        """Add the image digests to a store of the same data written before them; a store that cannot be written
        (a shared, read-only cache) keeps reading as it is."""
        if len(digests) != self.num_images or not self.writable:
            return
        try:
            _write_image_digests(self.group, digests)
            self.group.attrs["image_digests"] = IMAGE_DIGESTS_ATTR
        except OSError:
            return
        self.attrs["image_digests"], self.has_image_digests = IMAGE_DIGESTS_ATTR, True

    @property
    def codec(self) -> str:
        """The features' codec as the store's arrays declare it (stores without the attr: zstd, or whatever
        their arrays say), which is what writes into this store use."""
        return array_codec(self._array(f"features/{self.levels[0].key}"))

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_of(self, index: int) -> int:
        return int(index) // self.shard_size

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.num_samples))

    def done_mask(self) -> np.ndarray:
        return self.group["done"][:].astype(bool)

    def done_flags(self, rows) -> np.ndarray:
        """Done flags of `rows` (sample indices): one read of the span they cover, where done_mask() reads all."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not len(rows):
            return np.zeros(0, bool)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        return self._array("done")[lo:hi].astype(bool)[rows - lo]

    def shard_done(self, k: int) -> np.ndarray:
        """Done flags of shard k's samples: one chunk read, where done_mask() reads one per shard."""
        rng = self.shard_range(k)
        return self.group["done"][rng.start:rng.stop].astype(bool)

    def missing_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.done_mask())

    def level(self, name: str) -> LevelSpec:
        for lv in self.levels:
            if lv.name == name or lv.key == name:
                return lv
        raise KeyError(f"{self.url} has no level {name!r}; levels: {[lv.name for lv in self.levels]}")

    @contextmanager
    def claim(self, k: int) -> Iterator[bool]:
        from hairdiff.cache.claims import shard_claim

        try:
            claim = shard_claim(self.url, k)
            ok = claim.__enter__()
        except OSError as e:  # the first write of an extraction: a read-only or full target shows here
            raise StoreWriteError(f"cannot write to {self.url} ({e.strerror or e}): the store is unchanged; "
                                  f"pass a writable --cache-root, or free space, and run the same command "
                                  f"again") from None
        try:
            yield ok
        finally:
            claim.__exit__(None, None, None)

    # ------------------------------------------------------------------ writing
    def _require_writable(self):
        if not self.writable:
            raise ReadOnlyStoreError(f"{self.url} is open read-only: open it with mode='r+' to write")

    def write_samples(self, indices, features: dict, masks: np.ndarray, labels: list, orig_sizes) -> None:
        """Write samples of ONE shard, keeping its other done samples: the whole shard is written at once,
        in stored form (kept samples are copied as stored, never decoded and re-encoded)."""
        self._require_writable()
        indices = np.asarray(indices, dtype=np.int64)
        shards = {self.shard_of(i) for i in indices}
        if len(shards) != 1:
            raise ValueError(f"write_samples takes indices of one shard, got shards {sorted(shards)}")
        rng = self.shard_range(shards.pop())
        lo, hi = rng.start, rng.stop
        g = self.group
        done = g["done"][lo:hi].astype(bool)
        pos = indices - lo
        keep = done.copy()
        keep[pos] = False  # samples rewritten now
        dig = g["digests"][lo:hi] if self.has_digests else None
        if dig is not None:
            dig[~keep] = 0
        labels_png = [_png(lab) for lab in labels]
        sizes = np.asarray(orig_sizes, dtype=np.int32).reshape(-1, 2)
        lsizes = np.array([lab.shape[:2] for lab in labels], dtype=np.int32).reshape(-1, 2)
        regions = {}
        for lv in self.levels:
            x = np.asarray(features[lv.name] if lv.name in features else features[lv.key])
            regions.update(self._stored_region(lv, lo, hi, keep, pos, x, dig))
        mask_region = g["masks"][lo:hi] if keep.any() else np.full((hi - lo, self.resolution, self.resolution),
                                                                    IGNORE, np.uint8)
        mask_region[pos] = masks
        lab = np.asarray(g["labels"][lo:hi], dtype=object) if keep.any() else np.full(hi - lo, b"", dtype=object)
        os_, ls_ = g["orig_sizes"][lo:hi], g["label_sizes"][lo:hi]
        for j, p in enumerate(pos):
            lab[p], os_[p], ls_[p] = labels_png[j], sizes[j], lsizes[j]
            if dig is not None:
                base = len(self.levels)
                dig[p, base:] = [dg.digest(mask_region[p]), dg.digest(labels_png[j]),
                                 dg.digest(dg.size_bytes(sizes[j], lsizes[j]))]
        if done.any():
            g["done"][lo:hi] = np.zeros(hi - lo, np.uint8)  # flags of rewritten samples go first
        for name, region in {**regions, "masks": mask_region}.items():
            arr = g[name]
            if shard_codec.encodable(arr):
                encode_s, write_s = shard_codec.write_shard(arr, lo // self.shard_size, region)  # in this thread
                with self._io_lock:
                    self.io_seconds["compress"] += encode_s
                    self.io_seconds["write"] += write_s
            else:
                arr[lo:hi] = region
        g["labels"][lo:hi] = lab
        g["orig_sizes"][lo:hi] = os_
        g["label_sizes"][lo:hi] = ls_
        if dig is not None:
            g["digests"][lo:hi] = dig
        new_done = keep.copy()
        new_done[pos] = True
        g["done"][lo:hi] = new_done.astype(np.uint8)  # last: data first, then the flag

    def _stored_region(self, lv: LevelSpec, lo: int, hi: int, keep, pos, x: np.ndarray, dig) -> dict:
        """The shard's arrays of one level in stored form, new samples encoded at `pos`, kept ones as stored."""
        key = f"features/{lv.key}"
        shape = (hi - lo, lv.channels, lv.height, lv.width)
        names = [key] + ([f"{key}__scale", f"{key}__offset"] if self.precision == "int8" else [])
        if self.precision == "fp16" and not keep.any() and np.array_equal(pos, np.arange(hi - lo)):
            out = {key: np.ascontiguousarray(x, dtype=np.float16)}  # the whole shard is new: no copy needed
        elif keep.any():
            out = {n: self.group[n][lo:hi] for n in names}
        else:
            out = {key: np.zeros(shape, stored_dtype(self.precision))}
            out.update({n: np.zeros(shape[:2], np.float32) for n in names[1:]})
        if self.precision == "int8":
            q, scale, offset = quantize_int8(x)
            out[key][pos], out[names[1]][pos], out[names[2]][pos] = q, scale, offset
        elif out[key] is not x:
            out[key][pos] = x  # rounded to float16 here when it is not float16 already
        if dig is not None:
            col = self.levels.index(lv)
            for p in pos:
                dig[p, col] = dg.digest(*(out[n][p] for n in names))
        return out

    def add_digests(self) -> int:
        """Give a store written before per-sample digests its `digests`, computed from what each done sample holds
        now (so a shard swapped for another valid one before this is not found; every change after it is).
        Shard by shard, the attribute last: until then the store reads as before. Returns the samples digested."""
        self._require_writable()
        if self.has_digests:
            return 0
        cols = dg.columns([lv.key for lv in self.levels])
        g, s = self.group, self.shard_size
        table = _create_digest_table(g, self.num_samples, s, cols)
        feats = {lv.key: [f"features/{lv.key}"] + ([f"features/{lv.key}__scale", f"features/{lv.key}__offset"]
                                                   if self.precision == "int8" else []) for lv in self.levels}
        done, count = self.done_mask(), 0
        for k in range(self.num_shards):
            rng = self.shard_range(k)
            idx = np.array([i for i in rng if done[i]], dtype=np.int64)
            if not len(idx):
                continue
            for name in [*(v[0] for v in feats.values()), "masks"]:
                self._check_present(name, idx, self._array(name).ndim)  # never digest fill values
            got = self._read([n for names in feats.values() for n in names] + ["masks", "orig_sizes", "label_sizes"],
                             idx)
            rows = np.zeros((len(rng), len(cols)), np.uint32)
            labels = self._get("labels", slice(rng.start, rng.stop))  # one chunk: the shard's labels at once
            for j, i in enumerate(idx):
                label = labels[i - rng.start]
                if not label:
                    raise self._corrupt(int(i), "labels: missing")
                rows[i - rng.start] = [*(dg.digest(*(got[n][j] for n in names)) for names in feats.values()),
                                       dg.digest(got["masks"][j]), dg.digest(bytes(label)),
                                       dg.digest(dg.size_bytes(got["orig_sizes"][j], got["label_sizes"][j]))]
            table[rng.start:rng.stop] = rows
            count += len(idx)
        g.attrs["digests"] = {"algorithm": "crc32c", "columns": cols}
        self.attrs["digests"], self.has_digests = g.attrs["digests"], True
        self._arrays.pop("digests", None)
        return count

    # ------------------------------------------------------------------ reading
    def _corrupt(self, i: int, part: str) -> CorruptSampleError:
        """part: "<array>: <what is wrong>"."""
        return CorruptSampleError(
            f"{self.url}: sample {self.ids[i]} (index {i}) is flagged done but unreadable ({part}): the store lost "
            f"data. Run `pipeline cache verify {self.url} --repair`, then the same `pipeline extract` command to "
            f"recompute it", part=part)

    def _array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def _read(self, names: list[str], idx: np.ndarray) -> dict[str, np.ndarray]:
        """Rows `idx` (any order, repeats allowed) of each named array: outside zarr's read path, all in one
        fetch, where the layout allows (cache/shard_codec.py), else by zarr; stored bytes that do not decode
        are an error naming the sample."""
        fast = {n: self._array(n) for n in names if shard_codec.readable(self._array(n))}
        try:
            out = shard_codec.read_arrays(fast, idx)
        except shard_codec.ChunkError as e:
            raise self._corrupt(e.sample, f"{e.array}: does not decode ({str(e)[:120]})") from None
        except Exception as e:  # what zarr's path reports the same way (an unreadable file ...)
            raise self._corrupt(int(np.atleast_1d(idx)[0]), f"{', '.join(fast)}: do not decode "
                                                            f"({type(e).__name__}: {str(e)[:80]})") from None
        return {n: out[n] if n in out else self._get(n, idx) for n in names}

    def _get(self, name: str, sel):
        """An array's values for `sel` (an index, slice or index array), with codec failures (bad checksum,
        undecodable chunk) turned into an error naming the samples."""
        arr = self.group[name]
        try:
            if not isinstance(sel, np.ndarray):
                return arr[sel]
            # Runs of consecutive indices as slices: zarr's orthogonal selection on sharded arrays is 30-100x
            # slower than slicing the same samples (3.1.6, measured in bench/host_pipeline.py).
            cuts = np.flatnonzero(np.diff(sel) != 1) + 1
            parts = [arr[int(r[0]):int(r[-1]) + 1] for r in np.split(sel, cuts)] if len(sel) else [arr[0:0]]
            return np.concatenate(parts) if len(parts) > 1 else parts[0]
        except Exception as e:  # zarr raises codec-specific errors for a corrupt chunk
            idx = np.atleast_1d(np.arange(self.num_samples)[sel])
            raise self._corrupt(int(idx[0]), f"{name}: does not decode ({type(e).__name__}: {str(e)[:80]})") from None

    def _check_present(self, name: str, idx: np.ndarray, ndim: int) -> None:
        """For stores without digests: a done sample's shard file must exist (zarr would return the fill value)."""
        fs, base = filesystem(self.url)
        for k in sorted({self.shard_of(i) for i in idx}):
            if (name, k) in self._present:
                continue
            if not fs.exists("/".join([base.rstrip("/"), name, "c", str(k)] + ["0"] * (ndim - 1))):
                i = next(int(i) for i in idx if self.shard_of(i) == k)
                raise self._corrupt(i, f"{name}: shard file missing")
            self._present.add((name, k))

    def _verify(self, idx: np.ndarray, columns: dict[str, list[np.ndarray]], stored: dict | None = None) -> None:
        """Compare each sample's stored digests with the data just read; raise on the first difference.
        stored: the `done` and `digests` rows of idx, when read with the data."""
        if not self.has_digests:
            return
        stored = stored or self._read(["done", "digests"], idx)
        done, want = stored["done"].astype(bool), stored["digests"]
        cols = self.attrs["digests"]["columns"]
        for c, parts in columns.items():
            col = cols.index(c)
            for j, i in enumerate(idx):
                if done[j] and dg.digest(*(p[j] for p in parts)) != want[j, col]:
                    name = f"features/{c}" if c in cols[:len(self.levels)] else c
                    raise self._corrupt(int(i), f"{name}: does not match its checksum (lost or changed since it "
                                                f"was written)")

    def read_batch(self, indices, levels: list[str] | None = None) -> dict:
        """Samples by index, in the given order: ids, features {name: (B,C,H,W) float16}, masks, orig_sizes.
        levels: the levels to read (names or keys; None: all). Raises CorruptSampleError when a done sample's
        data is lost or changed."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        wanted = self.levels if levels is None else [self.level(name) for name in levels]
        keys = {lv.key: f"features/{lv.key}" for lv in wanted}
        names = [n for key in keys.values() for n in ([key, f"{key}__scale", f"{key}__offset"]
                                                      if self.precision == "int8" else [key])]
        if not self.has_digests:
            for name in [*keys.values(), "masks"]:
                self._check_present(name, idx, self._array(name).ndim)
        got = self._read(names + ["masks", "orig_sizes", "label_sizes"]
                         + (["done", "digests"] if self.has_digests else []), idx)
        feats, parts = {}, {}
        for lv in wanted:
            key = keys[lv.key]
            if self.precision == "int8":
                parts[lv.key] = [got[key], got[f"{key}__scale"], got[f"{key}__offset"]]
                feats[lv.name] = dequantize_int8(*parts[lv.key])
            else:
                parts[lv.key] = [got[key]]
                feats[lv.name] = got[key]
        masks, sizes, lsizes = got["masks"], got["orig_sizes"], got["label_sizes"]
        self._verify(idx, {**parts, "masks": [masks], dg.SIZES: [[dg.size_bytes(o, s) for o, s in zip(sizes, lsizes)]]},
                     got if self.has_digests else None)
        return {"ids": [self.ids[i] for i in idx], "features": feats, "masks": masks, "orig_sizes": sizes}

    def read_sample(self, i: int) -> dict:
        b = self.read_batch([int(i)])
        return {"id": b["ids"][0], "features": {k: v[0] for k, v in b["features"].items()}, "mask": b["masks"][0],
                "orig_size": tuple(int(x) for x in b["orig_sizes"][0])}

    def read_label(self, i: int) -> np.ndarray:
        """The annotation at its own resolution, exact."""
        i = int(i)
        data = self._get("labels", slice(i, i + 1))[0]
        done = bool(self.group["done"][i])
        if not data:
            if done:
                raise self._corrupt(i, "labels: missing")
            raise KeyError(f"{self.url}: sample {i} has no stored label (not extracted yet)")
        if done and self.has_digests:
            self._verify(np.array([i]), {"labels": [[bytes(data)]]})
        return np.asarray(Image.open(io.BytesIO(bytes(data))))

    def read_sizes(self, i: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(original image size, annotation size) of a sample, checked like its data."""
        i = int(i)
        o, s = self._get("orig_sizes", slice(i, i + 1))[0], self._get("label_sizes", slice(i, i + 1))[0]
        if bool(self.group["done"][i]) and self.has_digests:
            self._verify(np.array([i]), {dg.SIZES: [[dg.size_bytes(o, s)]]})
        return (int(o[0]), int(o[1])), (int(s[0]), int(s[1]))

    def info(self) -> dict:
        done = self.done_mask()
        return {
            "url": self.url, "dataset": self.dataset, "split": self.split, "fingerprint": self.fingerprint,
            "data_key": self.data_key, "num_samples": self.num_samples, "done": int(done.sum()),
            "resolution": self.resolution, "precision": self.precision, "codec": self.codec,
            "shard_size": self.shard_size,
            "levels": [lv.to_dict() for lv in self.levels], "bytes": self.nbytes(),
            "fingerprint_inputs": self.fingerprint_inputs, "created": self.attrs.get("created"),
            "versions": self.attrs.get("versions"), "root": self.root,
        }

    def nbytes(self) -> int:
        fs, path = filesystem(self.url)
        try:
            return int(fs.du(path))
        except Exception:  # (any backend error) a backend that cannot size it: -1, shown as unknown
            return -1
