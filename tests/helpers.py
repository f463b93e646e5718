"""Writers for tiny datasets in the published on-disk layouts."""
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size=(24, 20), value=128, mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3) if mode == "RGB" else (size[1], size[0]), value, np.uint8)
    Image.fromarray(arr).save(path)
    return path


def write_mask(path: Path, size=(24, 20), box=(4, 4, 10, 10), fg=255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0]), np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = fg
    Image.fromarray(arr).save(path)
    return path
