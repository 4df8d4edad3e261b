"""Decoding and letterboxing in DataLoader worker processes, so the accelerator never waits on JPEG decoding.

A bad file must not kill a worker (that would lose the whole batch and hide which file was bad): each item
is either a decoded sample or the error that names the file, and the main process decides what to do.
Workers also stack the batch's images into one uint8 tensor, which the DataLoader pins (page-locked) on
CUDA machines so the copy to the device is asynchronous; the copy stays uint8 (4x less than float).
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hairdiff.cache.geometry import letterbox_image, letterbox_label
from hairdiff.core.errors import BadSampleError, UsageError


@dataclass
class Decoded:
    index: int
    id: str
    image: np.ndarray | None = None  # (R, R, 3) uint8, letterboxed
    mask: np.ndarray | None = None  # (R, R) uint8, letterboxed, 255 = ignore
    label: np.ndarray | None = None  # (h, w) uint8 at the annotation's own resolution
    orig_size: tuple[int, int] | None = None
    error: str | None = None
    seconds: float = 0.0  # decode + letterbox time, for the stage report


@dataclass
class DecodedBatch:
    items: list[Decoded]
    images: torch.Tensor  # (B_ok, R, R, 3) uint8: the images of the items without error, in order
    ok: list[int] = field(default_factory=list)  # positions in `items` of those images

    def pin_memory(self) -> "DecodedBatch":  # called by the DataLoader's pinning thread
        self.images = self.images.pin_memory()
        return self


class DecodeDataset(Dataset):
    def __init__(self, reader, refs, indices, resolution: int, transform=None, ids=None):
        self.reader, self.refs, self.indices, self.resolution = reader, refs, list(indices), resolution
        self.transform = transform  # (index, image, label) -> (image, label): an augmented view, or None
        self.ids = ids  # the store's sample ids when they are not the refs' (views: "<id>@<view>")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> Decoded:
        t = time.perf_counter()
        index = int(self.indices[j])
        ref = self.refs[index]
        sid = self.ids[index] if self.ids is not None else ref.id
        try:
            s = self.reader.load(ref)
        except BadSampleError as e:
            return Decoded(index, sid, error=str(e))
        except Exception as e:  # an unexpected decoder failure still names the file rather than killing the run
            return Decoded(index, sid, error=f"{ref.image_path}: {type(e).__name__}: {e}")
        image, label = s.image, s.label
        if self.transform is not None:
            image, label = self.transform(index, image, label)
        return Decoded(index, sid, image=letterbox_image(image, self.resolution),
                       mask=letterbox_label(label, self.resolution), label=label,
                       orig_size=(int(image.shape[0]), int(image.shape[1])), seconds=time.perf_counter() - t)


def collate(items: list[Decoded]) -> DecodedBatch:
    ok = [j for j, d in enumerate(items) if d.error is None]
    images = torch.from_numpy(np.stack([items[j].image for j in ok])) if ok else torch.empty(0, dtype=torch.uint8)
    return DecodedBatch(items, images, ok)


# Decode workers start from a fork server, not a fork of this process: by the time a loader starts, this process runs
# threads (zarr's event loop, Dask's and the writers' pools), and a fork copies whatever lock one of them holds at
# that instant into a child that then waits on it forever (seen once as an extraction that never finished).
def worker_start():
    """The start method of decode workers: the fork server, started here if need be, which imports this module (so
    torch and numpy) once and forks each worker from it ready; None (the platform's default, spawn) where there is
    no fork server. Before Python 3.13 the server listens on a socket named under TMPDIR (as do the workers'
    tensor hand-overs), and a socket's name holds at most 107 bytes: a longer TMPDIR is a user error named here
    (extraction asks before its model loads), not a traceback from inside a worker."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    try:
        multiprocessing.forkserver.ensure_running()
    except OSError as e:
        if "too long" not in str(e):
            raise
        raise UsageError(
            f"decode workers need a socket in the temporary folder, and {tempfile.gettempdir()} cannot hold one "
            f"({e}): set TMPDIR to a shorter folder, or pass --workers 0") from None
    return context


def decode_loader(reader, refs, indices, resolution: int, batch_size: int, workers: int, pin: bool = False,
                  transform=None, ids=None) -> DataLoader:
    return DataLoader(
        DecodeDataset(reader, refs, indices, resolution, transform, ids),
        batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate, pin_memory=pin,
        prefetch_factor=4 if workers > 0 else None, persistent_workers=False,
        multiprocessing_context=worker_start() if workers > 0 else None,
    )


def to_model_input(images, device: torch.device, dtype: torch.dtype, channels_last: bool = True) -> torch.Tensor:
    """uint8 (B,R,R,3) tensor (or list of (R,R,3) arrays) -> (B,3,R,R) in [-1, 1] on the device.

    Normalised on the device so the copy stays uint8; from pinned memory the copy is asynchronous.
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.stack(images))
    x = x.to(device, non_blocking=x.is_pinned())
    x = x.permute(0, 3, 1, 2).to(dtype=dtype).div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
