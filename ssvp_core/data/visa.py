"""VisA (VisA_20220922) read through its official split file.

    <root>/split_csv/1cls.csv        columns: object, split, label, image, mask (paths relative to <root>)
    <root>/<class>/Data/Images/{Normal,Anomaly}/*.JPG
    <root>/<class>/Data/Masks/Anomaly/*.png          values > 0 are anomalous (not 0/255)
    <root>/<class>/image_anno.csv    optional: the defect labels of each anomalous image, kept as `defect`
                                     ("chunk of gum missing", or several: "bubble, discolor")
"""
from __future__ import annotations

import csv
from pathlib import Path

from .records import NORMAL, Sample, ScanResult

SPLIT_CSV = Path("split_csv") / "1cls.csv"
REQUIRED_COLUMNS = {"object", "split", "label", "image", "mask"}


def _defect_types(cls_dir: Path) -> dict[str, str]:
    anno = cls_dir / "image_anno.csv"
    if not anno.is_file():
        return {}
    out = {}
    with anno.open(newline="") as f:
        for row in csv.DictReader(f):
            label = (row.get("label") or "").strip()
            if row.get("image") and label and label != "normal":
                out[Path(row["image"]).name] = ", ".join(p.strip() for p in label.split(",") if p.strip())
    return out


def scan_visa(root: Path, split: str = "test", dataset: str = "visa") -> ScanResult:
    root = Path(root)
    result = ScanResult()
    csv_path = root / SPLIT_CSV
    if not csv_path.is_file():
        result.add("layout", csv_path, "VisA needs its split file split_csv/1cls.csv (shipped with VisA_20220922); see data/README.md")
        return result
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = REQUIRED_COLUMNS - set(reader.fieldnames or [])
        if missing:
            result.add("layout", csv_path, f"missing columns {sorted(missing)}; expected {sorted(REQUIRED_COLUMNS)}")
            return result
        rows = [r for r in reader if r["split"].strip() == split]
    defect_cache: dict[str, dict[str, str]] = {}
    classes_seen = []
    for row in rows:
        cls = row["object"].strip()
        if cls not in defect_cache:
            defect_cache[cls] = _defect_types(root / cls)
            classes_seen.append(cls)
        image = root / row["image"].strip()
        if not image.is_file():
            result.add("missing-image", image, f"listed in {csv_path} but not on disk")
            continue
        anomalous = row["label"].strip().lower() == "anomaly"
        if not anomalous:
            result.samples.append(Sample(image, None, cls, 0, NORMAL, dataset, mask_mode="label"))
            continue
        mask_rel = (row.get("mask") or "").strip()
        mask = root / mask_rel if mask_rel else None
        if mask is None or not mask.is_file():
            result.add("missing-mask", image, f"anomalous image without mask file {mask}; restore it from VisA_20220922")
            continue
        defect = defect_cache[cls].get(image.name, "anomaly")
        result.samples.append(Sample(image, mask, cls, 1, defect, dataset, mask_mode="label"))
    if not rows:
        result.add("empty-class", csv_path, f"no rows with split == {split!r}")
    return result
