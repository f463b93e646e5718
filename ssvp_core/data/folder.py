"""`folder`: your own images, sorted into folders by hand.

    <root>/normal/*.png          normal images (required)
    <root>/abnormal/*.png        anomalous images (optional)
    <root>/masks/*.png           optional: one mask per anomalous image, matched by name: abnormal/scratch_01.jpg
                                 -> masks/scratch_01.png or masks/scratch_01_mask.png (any image format)

or several products at once, one such folder per product: <root>/<product>/{normal,abnormal,masks}/. The product
name is the folder's name (for text prompts, `bottle_cap` -> "bottle cap"); a single-product root is named after the
root folder. With masks/ present every anomalous image needs its mask (a missing one is a problem `ssvp data verify`
lists); without masks/ the anomalous images carry no mask: evaluation then reports image metrics only, and training
(which needs masks) refuses the dataset. Splits: `test` is every image; `train` the normal images only.
"""
from __future__ import annotations

from pathlib import Path

from .images import list_images
from .mvtec import _mask_stem, find_mask
from .records import NORMAL, Sample, ScanResult

NORMAL_DIR, ABNORMAL_DIR, MASK_DIR = "normal", "abnormal", "masks"
MASK_SUFFIXES = ("", "_mask")


def is_folder_layout(root: Path) -> bool:
    root = Path(root)
    return (root / NORMAL_DIR).is_dir() or any((d / NORMAL_DIR).is_dir() for d in _subdirs(root))


def _subdirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []


def scan_folder(root: Path, split: str = "test", dataset: str = "folder") -> ScanResult:
    root = Path(root)
    result = ScanResult()
    if (root / NORMAL_DIR).is_dir():
        products = [(root.resolve().name, root)]
    else:
        products = [(d.name, d) for d in _subdirs(root) if (d / NORMAL_DIR).is_dir()]
    if not products:
        result.add("layout", root, f"unrecognized layout: expected {root}/{NORMAL_DIR}/ (and optionally {ABNORMAL_DIR}/, "
                                   f"{MASK_DIR}/), or one such folder per product: {root}/<product>/{NORMAL_DIR}/")
        return result
    for cls, folder in products:
        before = len(result.samples)
        result.samples += [Sample(p, None, cls, 0, NORMAL, dataset) for p in list_images(folder / NORMAL_DIR)]
        if split == "test":
            _scan_abnormal(folder, cls, dataset, result)
        if len(result.samples) == before:
            result.add("empty-class", folder / NORMAL_DIR, f"product {cls!r} has no images in {NORMAL_DIR}/"
                       + (f" or {ABNORMAL_DIR}/" if split == "test" else ""))
    return result


def _scan_abnormal(folder: Path, cls: str, dataset: str, result: ScanResult) -> None:
    images = list_images(folder / ABNORMAL_DIR)
    mask_dir = folder / MASK_DIR
    if not mask_dir.is_dir():
        result.samples += [Sample(p, None, cls, 1, "abnormal", dataset) for p in images]
        return
    for img in images:
        mask = find_mask(mask_dir, img, MASK_SUFFIXES)
        if mask is None:
            result.add("missing-mask", img, f"no mask {mask_dir / (img.stem + '.png')} although {MASK_DIR}/ exists; "
                                            f"add it, or remove {MASK_DIR}/ to evaluate image metrics only")
            continue
        result.samples.append(Sample(img, mask, cls, 1, "abnormal", dataset))
    stems = {p.stem for p in images}
    for mask in list_images(mask_dir):
        if mask.stem not in stems and _mask_stem(mask, ("_mask",)) not in stems:
            result.add("orphan-mask", mask, f"mask without image: no {ABNORMAL_DIR}/{_mask_stem(mask, ('_mask',))}.*; "
                                            "delete the mask or restore the image")
