"""Single-product surface-inspection sets in their published layouts: KolektorSDD2, RSDD and DAGM 2007.

SSVP (like Bayes-PFL) evaluates the post-processed copies of these sets (Bayes-PFL DATA_three: random crops,
balanced normals). Those copies use the MVTec-style layout and are read by `mvtec.scan_mvtec_layout`; each scanner
below falls back to it when the published layout is not found, so either form works under the same name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .images import list_images
from .mvtec import class_dirs, scan_mvtec_layout
from .records import NORMAL, Sample, ScanResult


def _fallback(root: Path, split: str, dataset: str, expected: str) -> ScanResult:
    """The published layout is absent: read the MVTec-style processed copy if there is one, else report the layout."""
    if class_dirs(root):
        return scan_mvtec_layout(root, split, dataset)
    result = ScanResult()
    result.add("layout", root, f"expected {expected} or the MVTec-style processed copy (data/README.md)")
    return result


def _report_orphans(masks: dict[str, Path], images: list[Path], what: str, result: ScanResult) -> None:
    """Masks (by image stem) whose image is missing."""
    stems = {p.stem for p in images}
    for stem, mask in masks.items():
        if stem not in stems:
            result.add("orphan-mask", mask, f"{what} without image; delete it or restore the image")


def _gt_sample(image: Path, gt: Path, cls: str, dataset: str, result: ScanResult) -> None:
    """A sample labelled by its ground truth: an all-zero GT means a normal image (KSDD, KSDD2, RSDD)."""
    try:
        with Image.open(gt) as im:
            empty = not np.asarray(im).any()
    except Exception as e:  # reported, not raised: verify lists everything at once
        result.add("unreadable-mask", gt, f"cannot decode mask ({e}); replace it with an intact copy")
        return
    result.samples.append(Sample(image, None if empty else gt, cls, 0 if empty else 1, NORMAL if empty else "defect", dataset))


def scan_ksdd2(root: Path, split: str = "test", dataset: str = "ksdd2") -> ScanResult:
    """KolektorSDD2: <root>/{train,test}/NNNNN.png with NNNNN_GT.png (all-zero GT = normal); one class."""
    root = Path(root)
    split_dir = root / split
    if not (split_dir.is_dir() and any(p.stem.endswith("_GT") for p in list_images(split_dir))):
        return _fallback(root, split, dataset, "KolektorSDD2 (<root>/{train,test}/NNNNN.png + NNNNN_GT.png)")
    result = ScanResult()
    images = [p for p in list_images(split_dir) if not p.stem.endswith("_GT")]
    for img in images:
        gt = next((c for c in (split_dir / f"{img.stem}_GT.png", split_dir / f"{img.stem}_GT{img.suffix}") if c.is_file()), None)
        if gt is None:
            result.add("missing-mask", img, f"no {img.stem}_GT.png beside it; restore it from KolektorSDD2")
            continue
        _gt_sample(img, gt, "ksdd2", dataset, result)
    _report_orphans({gt.stem[:-3]: gt for gt in list_images(split_dir) if gt.stem.endswith("_GT")}, images, "GT", result)
    if not result.samples and not result.problems:
        result.add("empty-class", split_dir, "no images")
    return result


RSDD_TYPES = {"Type-I RSDDs dataset": "type-i", "Type-II RSDDs dataset": "type-ii"}


def scan_rsdd(root: Path, split: str = "test", dataset: str = "rsdd") -> ScanResult:
    """RSDD: <root>/Type-{I,II} RSDDs dataset/{Rail surface images,GroundTruth}/<same file name>.

    Every published image contains a defect; the split argument is ignored for this layout (all images are test).
    """
    root = Path(root)
    present = [(root / d, cls) for d, cls in RSDD_TYPES.items() if (root / d).is_dir()]
    if not present:
        return _fallback(root, split, dataset, "'Type-I RSDDs dataset/' and/or 'Type-II RSDDs dataset/'")
    result = ScanResult()
    if split != "test":
        return result
    for tdir, cls in present:
        img_dir, gt_dir = tdir / "Rail surface images", tdir / "GroundTruth"
        gts = {p.stem: p for p in list_images(gt_dir)}
        images = list_images(img_dir)
        for img in images:
            gt = gts.get(img.stem)
            if gt is None:
                result.add("missing-mask", img, f"no GroundTruth/{img.stem}.* ; restore it from RSDD")
                continue
            _gt_sample(img, gt, cls, dataset, result)
        _report_orphans(gts, images, "GroundTruth", result)
        if not images:
            result.add("empty-class", img_dir, f"class {cls!r} has no images")
    return result


def scan_dagm(root: Path, split: str = "test", dataset: str = "dagm") -> ScanResult:
    """DAGM 2007 (Kaggle upload): <root>/ClassN/{Train,Test}/NNNN.PNG + Label/NNNN_label.PNG for defective images."""
    root = Path(root)
    classes = sorted(d for d in root.glob("Class*") if d.is_dir()) if root.is_dir() else []
    if not classes:
        return _fallback(root, split, dataset, "DAGM ClassN/{Train,Test}/ folders (Kaggle upload)")
    result = ScanResult()
    sub = "Test" if split == "test" else "Train"
    for cdir in classes:
        sdir = cdir / sub
        label_dir = sdir / "Label"
        images = list_images(sdir)
        labels = {p.stem[: -len("_label")]: p for p in list_images(label_dir) if p.stem.endswith("_label")}
        for img in images:
            lab = labels.get(img.stem)
            if lab is None:
                result.samples.append(Sample(img, None, cdir.name, 0, NORMAL, dataset))
            else:
                result.samples.append(Sample(img, lab, cdir.name, 1, "defect", dataset))
        _report_orphans(labels, images, "label", result)
        if not images:
            result.add("empty-class", sdir, f"class {cdir.name!r} has no images in {sub}/")
    return result


def scan_ksdd(root: Path, split: str = "test", dataset: str = "ksdd") -> ScanResult:
    """KolektorSDD (v1): <root>/kosNN/PartK.jpg + PartK_label.bmp (all-zero label = normal); one class.

    The published set has no split; every image is read as test. The AnomalyCLIP / AdaCLIP processed copies
    (3 crops per image, MVTec layout) are read through the MVTec-style fallback."""
    root = Path(root)
    folders = sorted(d for d in root.glob("kos*") if d.is_dir()) if root.is_dir() else []
    if not folders:
        return _fallback(root, split, dataset, "KolektorSDD kosNN/PartK.jpg + PartK_label.bmp folders")
    result = ScanResult()
    if split != "test":
        return result
    for folder in folders:
        for img in (p for p in list_images(folder) if not p.stem.endswith("_label")):
            label = next((c for c in folder.glob(f"{img.stem}_label.*")), None)
            if label is None:
                result.add("missing-mask", img, f"no {img.stem}_label.bmp beside it; restore it from KolektorSDD")
                continue
            _gt_sample(img, label, "electrical commutators", dataset, result)
    return result
