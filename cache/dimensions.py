"""The names of each stored array's axes (Zarr v3 `dimension_names`), so tools that need named axes (xarray)
open a store directly: `xarray.open_zarr(STORE, group="features")` gives one variable per level, the root
group the masks, ids, sizes and flags, all sharing the `sample` axis. Stores written before the names were
recorded open with zarr and dask as before; xarray refuses them (it requires the names)."""
from __future__ import annotations

from hairdiff.cache.levels import LevelSpec

SAMPLE = ("sample",)
MASKS = ("sample", "y", "x")  # at the store's resolution
SIZES = ("sample", "hw")  # (height, width)
DIGESTS = ("sample", "digest")
IMAGES = ("image",)  # one per image file (a sample is an image's view)


def level(lv: LevelSpec) -> tuple[str, str, str, str]:
    """A level's axes: its own channel and grid axes (levels differ in both), the shared sample axis."""
    return ("sample", f"{lv.key}_channel", f"{lv.key}_y", f"{lv.key}_x")
