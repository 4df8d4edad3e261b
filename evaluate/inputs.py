"""What the Python API accepts as an image: a path, a PIL image or a numpy array, each made (H, W, 3) uint8 RGB by
the rules extraction decodes files with (extract/imageio.py), or a BadSampleError naming the image and the fix."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from hairdiff.core.errors import BadSampleError, UsageError

FIX_ARRAY = "pass an RGB image as a uint8 array of shape (H, W, 3) (or (H, W) grey, (H, W, 4) RGBA)"


def image_name(item, k: int) -> str:
    """How messages and results name the k-th image: its path, a PIL image's file name, else its position."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, Image.Image) and getattr(item, "filename", ""):
        return str(item.filename)
    return f"image {k} (a {type(item).__module__.split('.')[0]}.{type(item).__name__})"


def _from_array(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == bool or a.dtype.kind in "iuf" and a.dtype != np.uint8:
        raise BadSampleError(name, f"a {a.dtype} array, not uint8", "convert it, e.g. (x * 255).round().astype("
                                                                    "np.uint8) for values in 0..1")
    if a.dtype != np.uint8:
        raise BadSampleError(name, f"a {a.dtype} array", FIX_ARRAY)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise BadSampleError(name, f"shape {a.shape} is not an image's", FIX_ARRAY)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise BadSampleError(name, f"shape {a.shape} holds no pixel", FIX_ARRAY)
    return np.ascontiguousarray(a[..., :3])  # alpha dropped, colours kept as stored (as files are read)


def to_rgb_array(item, k: int = 0) -> np.ndarray:
    """The k-th image of a call as (H, W, 3) uint8 RGB. A file that cannot be decoded, a PIL image that fails to
    load and an array that is not an image are BadSampleError naming it; any other type is a UsageError."""
    from hairdiff.extract.imageio import load_rgb, to_rgb

    name = image_name(item, k)
    if isinstance(item, (str, os.PathLike)):
        return load_rgb(Path(item))
    if isinstance(item, Image.Image):
        try:
            item.load()
            return to_rgb(item)
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise BadSampleError(name, f"cannot decode the image ({type(e).__name__}: {e})", "pass another image")
    if isinstance(item, np.ndarray):
        return _from_array(item, name)
    raise UsageError(f"{name}: not an image; pass a path, a PIL image or a numpy array (or a list of them)")
