"""All pixel metrics of one class from one sort: AUROC, AP, F1-max, AUPRO (exact and legacy_cflow200)."""
from __future__ import annotations

import numpy as np

from .pro import ProCurve, aupro_exact, aupro_legacy_cflow, region_labels
from .ranking import Curve, SortedScores, ap_from_curve, as_flat, auroc_from_curve, f1_max_from_curve

AUPRO_VARIANTS = ("exact", "legacy_cflow200")


def pixel_metrics(maps, masks, fpr_limit: float = 0.3, aupro: tuple[str, ...] = AUPRO_VARIANTS) -> dict[str, float]:
    """maps (N, H, W) float scores and masks (N, H, W) {0,1} of one class."""
    maps = np.asarray(maps)
    masks = np.asarray(masks).astype(bool)
    if maps.shape != masks.shape:
        raise ValueError(f"anomaly maps {maps.shape} and masks {masks.shape} differ in shape")
    unknown = set(aupro) - set(AUPRO_VARIANTS)
    if unknown:
        raise ValueError(f"unknown AUPRO variant(s) {sorted(unknown)}; choose from {AUPRO_VARIANTS}")
    flat, _ = as_flat(maps)
    labels, sizes = region_labels(masks.reshape((-1,) + masks.shape[-2:]) if masks.ndim >= 2 else masks[None])
    ss = SortedScores.build(flat, payload=labels.reshape(-1))
    curve = Curve.from_sorted(ss)
    f1, thr = f1_max_from_curve(curve)
    out = {"auroc": auroc_from_curve(curve), "ap": ap_from_curve(curve), "f1_max": f1, "f1_threshold": thr}
    if aupro:
        pro = ProCurve(ss, curve, sizes)
        if "exact" in aupro:
            out["aupro"] = aupro_exact(ss, pro, fpr_limit)
        if "legacy_cflow200" in aupro:
            out["aupro_legacy"] = aupro_legacy_cflow(ss, pro, flat.dtype, fpr_limit)
    return out
