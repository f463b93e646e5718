"""Opening images and masks with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image(p))


def open_rgb(path: Path) -> Image.Image:
    """Fully decode an image as RGB; truncated or unreadable files raise DataError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found. Re-create the dataset index or restore the file.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({e}). Replace the file with an intact copy.") from None


def mask_array(path: Path, mask_mode: str = "binary") -> np.ndarray:
    """Read a mask as a float32 array in {0, 1} (before any resizing).

    binary: divide by 255 when the file uses 0/255 (or by 1 for 0/1 files); intermediate values stay fractional
    and are thresholded at 0.5 after resizing, as the papers do. label: every value > 0 is anomalous.
    """
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found. Restore it or remove the image it belongs to.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode mask ({e}). Replace the file with an intact copy.") from None
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    if mask_mode == "label":
        return (arr > 0).astype(np.float32)
    arr = arr.astype(np.float32)
    peak = float(arr.max()) if arr.size else 0.0
    scale = 255.0 if peak > 1.0 else 1.0
    if peak > 255.0:
        scale = 65535.0
    return np.clip(arr / scale, 0.0, 1.0)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) without decoding the pixels."""
    with Image.open(path) as im:
        return im.size
