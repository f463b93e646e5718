"""AnomalyCLIP-style meta.json, the interchange format of the ZSAD codebases (AnomalyCLIP, AdaCLIP, Bayes-PFL, ...).

    {"train": {cls: [entry, ...]}, "test": {cls: [entry, ...]}}
    entry = {"img_path", "mask_path" ("" for normals), "cls_name", "specie_name", "anomaly" (0/1)}

Paths are relative to the dataset root (AnomalyCLIP's own scripts write them prefixed with the root they were run
with: "./images/..." or absolute paths, which resolve the same way). Image-level-only sets (HeadCT, BrainMRI, Br35H)
have no mask for any image: their anomalous entries are read without masks, so their pixel metrics are undefined.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import io
from .records import NORMAL, Sample, ScanResult

META_NAME = "meta.json"
ENTRY_KEYS = ("img_path", "mask_path", "cls_name", "specie_name", "anomaly")


def scan_meta(root: Path, split: str = "test", dataset: str = "meta", meta_path: Path | None = None) -> ScanResult:
    root = Path(root)
    meta_path = Path(meta_path) if meta_path else root / META_NAME
    result = ScanResult()
    if not meta_path.is_file():
        result.add("layout", meta_path, "no meta.json; create one with `ssvp data meta export NAME ROOT` or use the dataset's own reader")
        return result
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        result.add("layout", meta_path, f"not valid JSON ({e}); regenerate it")
        return result
    section = meta.get(split) if isinstance(meta, dict) else None
    if section is None and isinstance(meta, dict):
        section = meta.get(split.capitalize())  # AnomalyCLIP's DAGM script writes "Test"/"Train"
    if not isinstance(section, dict):
        result.add("layout", meta_path, f"no {split!r} section of the form {{class: [entries]}}")
        return result
    for cls, entries in section.items():
        if not entries:
            result.add("empty-class", meta_path, f"class {cls!r} has no entries in {split!r}")
        # image-level-only sets (HeadCT, BrainMRI, Br35H) give no mask for any anomalous image: their anomalies are
        # read without masks (pixel metrics then come out undefined); a class with some masks must have them all
        image_level = not any(e.get("mask_path") for e in entries if isinstance(e, dict))
        for i, e in enumerate(entries):
            missing = [k for k in ENTRY_KEYS if k not in e]
            if missing:
                result.add("layout", meta_path, f"{split}/{cls}[{i}] lacks keys {missing}")
                continue
            image = root / e["img_path"]
            if not image.is_file():
                result.add("missing-image", image, f"listed in {meta_path} but not on disk")
                continue
            label = int(e["anomaly"])
            mask = root / e["mask_path"] if e["mask_path"] else None
            if label == 1 and not image_level and (mask is None or not mask.is_file()):
                result.add("missing-mask", image, f"anomalous entry without mask file ({e['mask_path'] or 'empty mask_path'})")
                continue
            defect = e["specie_name"] or (NORMAL if label == 0 else "anomaly")
            result.samples.append(Sample(image, mask if label else None, e["cls_name"] or cls, label, defect, dataset))
    return result


def to_meta(splits: dict[str, list[Sample]], root: Path, dataset_name: str | None = None) -> dict:
    """Build the meta dict for samples under `root` (paths stored relative to it)."""
    root = Path(root).resolve()
    meta: dict = {}
    for split, samples in splits.items():
        section: dict[str, list[dict]] = {}
        for s in samples:
            section.setdefault(s.cls, []).append({
                "img_path": _relative(s.image, root),
                "mask_path": _relative(s.mask, root) if s.mask else "",
                "cls_name": s.cls,
                "specie_name": s.defect,
                "anomaly": int(s.label),
            })
        meta[split] = section
    if dataset_name:
        meta["dataset_name"] = dataset_name
    return meta


def write_meta(splits: dict[str, list[Sample]], root: Path, out: Path | None = None, dataset_name: str | None = None) -> Path:
    out = Path(out) if out else Path(root) / META_NAME
    return io.write_json(out, to_meta(splits, root, dataset_name), indent=4)


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        raise ValueError(f"{path} is not under the dataset root {root}; meta.json paths must be relative to the root") from None
