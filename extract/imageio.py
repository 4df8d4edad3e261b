"""Image and mask decoding that either yields a clean array or names the file and the fix.

Conversions (documented behaviour, not errors): EXIF orientation is applied; greyscale, palette, CMYK and
16-bit images become 8-bit RGB; alpha is dropped (the colour channels are kept as stored, no compositing,
so hair at semi-transparent edges keeps its colour).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from extract.readers.errors import BadSampleError

# 178 M pixels (PIL's default warning limit x2): far above any dataset image, far below a memory bomb.
MAX_PIXELS = 178_956_970


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise BadSampleError(path, "file is missing", "restore the file or remove the sample (use --ids)")
    if path.stat().st_size == 0:
        raise BadSampleError(path, "file is empty (0 bytes)", "re-download or re-export the file")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()  # decode fully here so truncation is caught here, not later
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadSampleError(path, f"image too large to decode safely ({e})",
                             "downscale the image below 178 megapixels") from None
    except PermissionError:
        raise BadSampleError(path, "permission denied", "make the file readable (chmod a+r)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadSampleError(path, f"cannot decode image ({e})", "re-download or re-export the file") from None
    return img


def load_rgb(path) -> np.ndarray:
    path = Path(path)
    img = _open(path)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:
        pass  # a broken EXIF block must not lose an otherwise good image
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(a / max(a.max(), 1) * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def load_gray(path) -> np.ndarray:
    """A mask file as a 2-D uint8 array (first channel of colour masks; 1-bit masks as 0/255)."""
    path = Path(path)
    img = _open(path)
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if img.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
        img = img.convert("L")
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a.copy()


def check_label_size(label: np.ndarray, image: np.ndarray, label_path) -> None:
    """Annotations may be stored at another resolution (CelebAMask-HQ: 512 for 1024 images), same aspect."""
    lh, lw = label.shape[:2]
    ih, iw = image.shape[:2]
    if abs(lh / lw - ih / iw) > 0.02:
        raise BadSampleError(label_path, f"mask is {lw}x{lh} but its image is {iw}x{ih} (another aspect ratio)",
                             "use the mask that belongs to this image")
