"""Image and mask decoding that either yields a clean array or a BadSampleError naming the file and the fix.

Conversions (documented behaviour, not errors): EXIF orientation is applied; greyscale (L, LA), palette,
CMYK and 16-bit images become 8-bit RGB (16-bit by dropping the low byte, v / 257, not by stretching each
image to its own maximum); alpha is dropped: the colour channels are kept as stored, no compositing, so
hair at semi-transparent edges keeps its colour.
Every file is decoded in full here (img.load()), so a truncated file fails here, in the loader, with its
path, not later inside a model.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from hairdiff.core.errors import BadSampleError

# 178 M pixels (PIL's default warning limit x2): far above any dataset image, far below a memory bomb.
MAX_PIXELS = 178_956_970
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _open(path: Path) -> Image.Image:
    if not path.exists():
        if path.is_symlink():  # listed, but its target is gone: a bad sample like any unreadable file
            raise BadSampleError(path, f"a symbolic link to {os.readlink(path)}, which does not exist",
                                 "restore the target or remove the link, or leave the sample out with --ids")
        raise BadSampleError(path, "the file is missing", "restore the file, or leave the sample out with --ids")
    if path.is_dir():
        raise BadSampleError(path, "is a folder, not an image", "remove or rename the folder")
    if path.stat().st_size == 0:
        raise BadSampleError(path, "the file is empty (0 bytes)", "re-download or re-export the file")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    # Another library may have switched on silent zero-filling of truncated files; we want the error.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadSampleError(path, f"the image is too large to decode safely ({e})",
                             f"downscale it below {MAX_PIXELS // 1_000_000} megapixels") from None
    except PermissionError:
        raise BadSampleError(path, "permission denied", "make the file readable (chmod a+r)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadSampleError(path, f"cannot decode the image ({type(e).__name__}: {e})",
                             "re-download or re-export the file") from None
    return img


def load_rgb(path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, upright."""
    return to_rgb(_open(Path(path)))


def to_rgb(img: Image.Image) -> np.ndarray:
    """A decoded image as (H, W, 3) uint8 RGB, upright: the conversions above (the Python API's way for PIL
    images it is handed)."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:
        pass  # a broken EXIF block must not lose an otherwise good image
    if img.mode in SIXTEEN_BIT:
        a = np.asarray(img, dtype=np.int64)
        img = Image.fromarray(np.clip(a // 257, 0, 255).astype(np.uint8), "L")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def load_gray(path, palette_indices: bool = False) -> np.ndarray:
    """A mask file as a 2-D uint8 array: 1-bit as 0/255, colour by luminance (0/255 masks stored 3-channel
    stay 0/255), 16-bit clipped to 255. Palette images give their indices when `palette_indices` (class
    maps), else the luminance of their colours."""
    path = Path(path)
    img = _open(path)
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if img.mode == "P" and palette_indices:
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode not in ("L", *SIXTEEN_BIT):
        img = img.convert("L")
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a.copy()


def check_label_size(label: np.ndarray, image: np.ndarray, label_path) -> None:
    """Annotations may be stored at another resolution (CelebAMask-HQ: 512 for 1024 images), same aspect."""
    lh, lw = label.shape[:2]
    ih, iw = image.shape[:2]
    # One pixel of rounding either way is the same aspect ratio (e.g. 1023 -> 512 when halving).
    if abs(lh * iw - ih * lw) > max(iw, lw, ih, lh):
        raise BadSampleError(label_path, f"the mask is {lw}x{lh} but its image is {iw}x{ih} (another aspect ratio)",
                             "use the mask that belongs to this image, or resize it to the image's size")
