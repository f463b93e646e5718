"""Opening images and masks with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UnreadableFile

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image(p))


def other_files(folder: Path) -> list[Path]:
    """The visible files of `folder` that `list_images` leaves out because their names are not image names."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and not is_image(p))


def open_rgb(path: Path) -> Image.Image:
    """Fully decode an image as RGB; a missing, truncated or unreadable file raises UnreadableFile naming it."""
    fmt = None
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: image file not found. Re-create the dataset index or restore the file.",
                             Path(path), "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableFile(f"{path}: cannot decode image ({e}). Replace the file with an intact copy.",
                             Path(path), unreadable_reason(Path(path), e, fmt)) from None


def unreadable_reason(path: Path, error: Exception, fmt: str | None = None) -> str:
    """A few words on why `path` did not decode, for the lists of left-out files (the exception text stays in the
    error message); `fmt` is the format PIL recognised from the header, if it got that far."""
    try:
        head = path.open("rb").read(512)
    except OSError:
        head = None
    if isinstance(error, PermissionError) or head is None:
        return "cannot be opened (permission denied)" if isinstance(error, PermissionError) else "cannot be opened"
    if not head:
        return "empty file"
    if isinstance(error, UnidentifiedImageError) or fmt is None:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        printable = text and all(c.isprintable() or c.isspace() for c in text)
        return "not an image: a text file" if printable else "not an image: unrecognised content"
    if "truncated" in str(error).lower():
        return f"truncated {fmt}"
    return f"damaged {fmt} ({error})"


def mask_array(path: Path, mask_mode: str = "binary") -> np.ndarray:
    """Read a mask as a float32 array in {0, 1} (before any resizing).

    binary: divide by 255 when the file uses 0/255 (or by 1 for 0/1 files); intermediate values stay fractional
    and are thresholded at 0.5 after resizing, as the papers do. label: every value > 0 is anomalous.
    """
    fmt = None
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.load()
            arr = np.asarray(im)
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: mask file not found. Restore it or remove the image it belongs to.",
                             Path(path), "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableFile(f"{path}: cannot decode mask ({e}). Replace the file with an intact copy.",
                             Path(path), unreadable_reason(Path(path), e, fmt)) from None
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
