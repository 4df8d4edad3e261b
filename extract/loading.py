"""Decoding and letterboxing in DataLoader worker processes, so the accelerator never waits on JPEG decoding.

A bad file must not kill a worker (that would lose the whole batch and hide which file was bad): each item
is either a decoded sample or the error that names the file, and the main process decides what to do.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hairdiff.cache.geometry import letterbox_image, letterbox_label
from hairdiff.core.errors import BadSampleError


@dataclass
class Decoded:
    index: int
    id: str
    image: np.ndarray | None = None  # (R, R, 3) uint8, letterboxed
    mask: np.ndarray | None = None  # (R, R) uint8, letterboxed, 255 = ignore
    label: np.ndarray | None = None  # (h, w) uint8 at the annotation's own resolution
    orig_size: tuple[int, int] | None = None
    error: str | None = None


class DecodeDataset(Dataset):
    def __init__(self, reader, refs, indices, resolution: int):
        self.reader, self.refs, self.indices, self.resolution = reader, refs, list(indices), resolution

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> Decoded:
        index = int(self.indices[j])
        ref = self.refs[index]
        try:
            s = self.reader.load(ref)
        except BadSampleError as e:
            return Decoded(index, ref.id, error=str(e))
        except Exception as e:  # an unexpected decoder failure still names the file rather than killing the run
            return Decoded(index, ref.id, error=f"{ref.image_path}: {type(e).__name__}: {e}")
        return Decoded(
            index,
            ref.id,
            image=letterbox_image(s.image, self.resolution),
            mask=letterbox_label(s.label, self.resolution),
            label=s.label,
            orig_size=(int(s.image.shape[0]), int(s.image.shape[1])),
        )


def _as_list(batch):
    return batch


def decode_loader(reader, refs, indices, resolution: int, batch_size: int, workers: int) -> DataLoader:
    ds = DecodeDataset(reader, refs, indices, resolution)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_list,
        pin_memory=False,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )


def to_model_input(images: list[np.ndarray], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (R,R,3) list -> (B,3,R,R) in [-1, 1]; normalised on the device so the copy stays uint8 (4x less)."""
    x = torch.from_numpy(np.stack(images))
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).to(dtype=dtype).div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)
