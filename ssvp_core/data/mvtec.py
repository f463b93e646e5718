"""MVTec-AD-style layouts: MVTec-AD, MPDD, DTD-Synthetic, BTAD, the Bayes-PFL processed sets and the synthetic benchmark.

    <root>/<class>/train/<normal>/*.png
    <root>/<class>/test/<normal|defect>/*.png
    <root>/<class>/ground_truth/<defect>/<stem><suffix>.png

Masks are paired with images by name (stem + one of `mask_suffixes`), never by sorted position.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from .images import IMAGE_SUFFIXES, list_images
from .records import NORMAL, Sample, ScanResult


def class_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and ((d / "test").is_dir() or (d / "train").is_dir()))


def _mask_stem(mask: Path, suffixes: tuple[str, ...]) -> str:
    stem = mask.stem
    for suffix in suffixes:
        if suffix and stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def find_mask(gt_dir: Path, image: Path, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        for ext in (".png", image.suffix) + IMAGE_SUFFIXES:
            for cand in (gt_dir / f"{image.stem}{suffix}{ext}", gt_dir / f"{image.stem}{suffix}{ext.upper()}"):
                if cand.is_file():
                    return cand
    return None


def scan_mvtec_layout(
    root: Path,
    split: str = "test",
    dataset: str = "mvtec",
    normal_dir: str = NORMAL,
    mask_suffixes: tuple[str, ...] = ("_mask", ""),
    gt_dir_name: str = "ground_truth",
    class_name: Callable[[str], str] | None = None,
) -> ScanResult:
    root = Path(root)
    result = ScanResult()
    classes = class_dirs(root)
    if not classes:
        result.add(
            "layout", root,
            f"unrecognized layout: expected <root>/<class>/test/<{normal_dir}|defect>/*.png "
            f"(and <class>/{gt_dir_name}/<defect>/<image stem>{mask_suffixes[0]}.png); see data/README.md",
        )
        return result
    for cdir in classes:
        cls = class_name(cdir.name) if class_name else cdir.name
        split_dir = cdir / split
        if not split_dir.is_dir():
            result.add("layout", split_dir, f"class {cls!r} has no {split}/ folder")
            continue
        before = len(result.samples)
        for ddir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            defect = ddir.name
            images = list_images(ddir)
            if defect == normal_dir:
                result.samples += [Sample(p, None, cls, 0, NORMAL, dataset) for p in images]
                continue
            if split != "test":
                result.add("layout", ddir, f"unexpected defect folder in {split}/ (only {normal_dir}/ belongs there)")
                continue
            gt_dir = cdir / gt_dir_name / defect
            for img in images:
                mask = find_mask(gt_dir, img, mask_suffixes)
                if mask is None:
                    result.add(
                        "missing-mask", img,
                        f"no mask {gt_dir / (img.stem + mask_suffixes[0] + '.png')}; add it or move the image out of test/{defect}/",
                    )
                    continue
                result.samples.append(Sample(img, mask, cls, 1, defect, dataset))
        if split == "test":
            _orphan_masks(cdir, gt_dir_name, normal_dir, mask_suffixes, result)
        if len(result.samples) == before:
            result.add("empty-class", split_dir, f"class {cls!r} has no images in {split}/")
    return result


def strip_number_prefix(folder: str) -> str:
    """MAD-Sim's class folders carry their index ("02Unicorn"); the object is the name without it."""
    return re.sub(r"^\d+", "", folder) or folder


def _orphan_masks(cdir: Path, gt_dir_name: str, normal_dir: str, suffixes: tuple[str, ...], result: ScanResult) -> None:
    gt_root = cdir / gt_dir_name
    if not gt_root.is_dir():
        return
    for gdir in sorted(d for d in gt_root.iterdir() if d.is_dir()):
        image_stems = {p.stem for p in list_images(cdir / "test" / gdir.name)}
        for mask in list_images(gdir):
            if _mask_stem(mask, suffixes) not in image_stems and mask.stem not in image_stems:
                result.add("orphan-mask", mask, f"mask without image: no test/{gdir.name}/{_mask_stem(mask, suffixes)}.* ; delete the mask or restore the image")
