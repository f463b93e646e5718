"""Real-IAD (30 objects), read through its per-object JSON files.

    <root>/realiad_jsons/<object>.json (or realiad_jsons/realiad_jsons/<object>.json)
        {"meta": {"prefix": "<object>/", "normal_class": "OK"},
         "train": [...], "test": [{"category", "anomaly_class", "image_path", "mask_path"}, ...]}
    <root>/realiad_1024/<prefix><image_path>     (any realiad_* image folder: realiad_256, realiad_512, realiad_raw)

Anomaly class codes are turned into names (AK pit, BX deformation, CH abrasion, HS scratch, PS damage, QS missing,
YW foreign, ZW contamination) and become `Sample.defect`.
"""
from __future__ import annotations

import json
from pathlib import Path

from .records import NORMAL, Sample, ScanResult

CODES = {"AK": "pit", "BX": "deformation", "CH": "abrasion", "HS": "scratch", "PS": "damage", "QS": "missing",
         "YW": "foreign", "ZW": "contamination"}


def _json_dir(root: Path) -> Path | None:
    for cand in (root / "realiad_jsons" / "realiad_jsons", root / "realiad_jsons"):
        if cand.is_dir() and any(cand.glob("*.json")):
            return cand
    return None


def _image_dir(root: Path) -> Path | None:
    for name in ("realiad_1024", "realiad_512", "realiad_256", "realiad_raw"):
        if (root / name).is_dir():
            return root / name
    found = sorted(p for p in root.glob("realiad_*") if p.is_dir() and p.name != "realiad_jsons")
    return found[0] if found else None


def scan_realiad(root: Path, split: str = "test", dataset: str = "real-iad") -> ScanResult:
    root = Path(root)
    result = ScanResult()
    jdir, idir = _json_dir(root), _image_dir(root)
    if jdir is None or idir is None:
        result.add("layout", root, "expected realiad_jsons/<object>.json and an image folder such as realiad_1024/; see data/README.md")
        return result
    for jpath in sorted(jdir.glob("*.json")):
        try:
            doc = json.loads(jpath.read_text())
        except json.JSONDecodeError as e:
            result.add("layout", jpath, f"not valid JSON ({e})")
            continue
        meta = doc.get("meta") or {}
        normal = meta.get("normal_class", "OK")
        prefix = meta.get("prefix", f"{jpath.stem}/")
        entries = doc.get(split) or []
        if not entries:
            result.add("empty-class", jpath, f"no {split!r} entries")
        for e in entries:
            obj = e.get("category") or jpath.stem
            image = idir / prefix / e["image_path"]
            if not image.is_file():
                result.add("missing-image", image, f"listed in {jpath} but not on disk")
                continue
            code = e.get("anomaly_class", normal)
            if code == normal:
                result.samples.append(Sample(image, None, obj, 0, NORMAL, dataset))
                continue
            mask = idir / prefix / e["mask_path"] if e.get("mask_path") else None
            if mask is None or not mask.is_file():
                result.add("missing-mask", image, f"anomalous entry without mask file ({e.get('mask_path')})")
                continue
            result.samples.append(Sample(image, mask, obj, 1, CODES.get(code, code), dataset))
    return result
