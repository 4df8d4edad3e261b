"""The label values every stage agrees on: 0 background, 1 hair, 255 ignore (also the letterbox padding)."""
from __future__ import annotations

BACKGROUND, HAIR = 0, 1
IGNORE = 255
CLASS_NAMES = ("background", "hair")
NUM_CLASSES = len(CLASS_NAMES)
