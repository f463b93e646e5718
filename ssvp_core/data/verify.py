"""`ssvp data verify`: every problem of a dataset on disk, listed at once."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .records import Problem, Sample, ScanResult
from .registry import scan_dataset


def check_sample(sample: Sample, result: ScanResult) -> None:
    """Decode the image and its mask; record unreadable/truncated files, size mismatches and non-binary masks."""
    size = _decode(sample.image, "image", result)
    if sample.mask is None or size is None:
        return
    try:
        with Image.open(sample.mask) as im:
            im.load()
            mask = np.asarray(im)
            mask_size = im.size
    except OSError as e:
        kind = "truncated-mask" if "truncated" in str(e).lower() else "unreadable-mask"
        result.add(kind, sample.mask, f"cannot decode ({e}); replace it with an intact copy")
        return
    except Exception as e:
        result.add("unreadable-mask", sample.mask, f"cannot decode ({e}); replace it with an intact copy")
        return
    if mask_size != size:
        result.add("size-mismatch", sample.mask,
                   f"mask is {mask_size[0]}x{mask_size[1]} but its image {sample.image.name} is {size[0]}x{size[1]}; "
                   "regenerate the mask at the image's size")
    # JPEG masks (RSDD's GroundTruth, Kvasir-SEG's masks are published so) carry compression noise around 0 and 255;
    # the loader thresholds them at half the maximum, so only a lossless mask with several values is a problem
    lossy = sample.mask.suffix.lower() in (".jpg", ".jpeg")
    if sample.mask_mode == "binary" and lossy:
        if mask.ndim == 3:
            mask = mask[..., :3].max(axis=-1)
        if not (mask > mask.max() / 2).any():
            result.add("empty-mask", sample.mask, "anomalous image with an all-zero mask; fix the mask or move the image to the normal folder")
    elif sample.mask_mode == "binary":
        if mask.ndim == 3:
            mask = mask[..., :3].max(axis=-1)
        values = np.unique(mask)
        nonzero = values[values != 0]
        if len(nonzero) > 1:
            result.add("non-binary-mask", sample.mask,
                       f"{len(values)} distinct values (expected 0 and one foreground value such as 255); "
                       "re-save it as a 0/255 PNG (the loader would threshold it at half the maximum)")
        elif len(nonzero) == 0:
            result.add("empty-mask", sample.mask, "anomalous image with an all-zero mask; fix the mask or move the image to the normal folder")


def _decode(path: Path, what: str, result: ScanResult):
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except OSError as e:
        kind = "truncated-image" if "truncated" in str(e).lower() else "unreadable-image"
        result.add(kind, path, f"cannot decode {what} ({e}); replace it with an intact copy")
    except Exception as e:
        result.add("unreadable-image", path, f"cannot decode {what} ({e}); replace it with an intact copy")
    return None


def verify_dataset(name: str, root: str | Path, splits: tuple[str, ...] = ("test",), progress: bool = True) -> list[Problem]:
    problems: list[Problem] = []
    for split in splits:
        scan = scan_dataset(name, root, split)
        checked = ScanResult(problems=list(scan.problems))
        for sample in tqdm(scan.samples, desc=f"verify {name}/{split}", disable=not progress, leave=False):
            check_sample(sample, checked)
        problems += checked.problems
    return problems
