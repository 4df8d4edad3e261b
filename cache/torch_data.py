"""The torch Dataset of a store's samples (cache/reader.py's `torch_dataset()`): verified reads, one sample per item.
Kept apart so the cache room imports torch only when a Dataset is asked for."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from hairdiff.cache.store import FeatureStore


class StoreDataset(Dataset):
    """Items {"index", "id", "features": {level: float32 (C, H, W)}, "mask": uint8 (R, R)} of the chosen samples;
    torch's default collate stacks them into batches."""

    def __init__(self, store: FeatureStore, levels: list[str], samples: np.ndarray):
        self.store, self.levels, self.samples = store, list(levels), np.asarray(samples, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, k: int) -> dict:
        i = int(self.samples[k])
        b = self.store.read_batch([i], self.levels)
        return {"index": i, "id": b["ids"][0],
                "features": {name: torch.from_numpy(np.asarray(v[0], dtype=np.float32)) for name, v in
                             b["features"].items()},
                "mask": torch.from_numpy(np.array(b["masks"][0], dtype=np.uint8))}
