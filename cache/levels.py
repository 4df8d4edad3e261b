"""What a stored feature level is: the tap it came from and its geometry."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LevelSpec:
    name: str  # the tap, e.g. "unet.up_blocks.0"
    stride: int  # input pixels per feature pixel
    channels: int
    height: int
    width: int

    @property
    def key(self) -> str:
        """Zarr key: tap names hold dots, which read as paths in some tools."""
        return self.name.replace(".", "_").replace("/", "_").replace(":", "_")

    def to_dict(self) -> dict:
        return asdict(self)
