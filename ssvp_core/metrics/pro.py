"""Per-region overlap (PRO) and its area under the curve, in two definitions.

`exact` (MVTec reference semantics, also anomalib >= 2.3): regions are the 8-connected components of the ground
truth; PRO(t) is the mean over all regions of all images of the covered fraction; FPR(t) is over all normal pixels;
the curve uses every distinct threshold (ties dropped), is integrated by the trapezoidal rule up to FPR = 0.3 with
the end point interpolated, and divided by 0.3.

`legacy_cflow200` (cflow-ad `cal_pro_score`, used by AnomalyCLIP, Bayes-PFL, FAPrompt, ...): 200 thresholds
`np.arange(min, max, (max - min) / 200)` in the maps' dtype, a pixel is positive when score > t, keep points with
FPR < 0.3, min-max rescale those FPRs to [0, 1], then the trapezoidal area. Both are read off the one sort that
also gives AUROC/AP/F1: the sort carries each pixel's region id, and PRO increments 1/(R * region size) only on
anomalous pixels, so its cumulative sum runs over the few positives only.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .ranking import Curve, SortedScores

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def region_labels(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global ids of the 8-connected regions of each mask (0 = background) and the size of every region (index 0 unused)."""
    masks = np.asarray(masks).astype(bool)
    if masks.ndim == 2:
        masks = masks[None]
    labels = np.zeros(masks.shape, dtype=np.int32)
    offset = 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=EIGHT_CONNECTED)
        if n:
            labels[i] = np.where(lab > 0, lab + offset, 0)
            offset += n
    sizes = np.bincount(labels.reshape(-1), minlength=offset + 1)
    return labels, sizes


class ProCurve:
    """Cumulative PRO and FPR after each sorted pixel, evaluated lazily at the positions asked for."""

    def __init__(self, ss: SortedScores, curve: Curve, sizes: np.ndarray):
        self.curve = curve
        n_regions = len(sizes) - 1
        self.n_neg = curve.negatives
        self.valid = n_regions > 0 and self.n_neg > 0
        positive_ids = ss.payload[ss.payload > 0]
        weights = 1.0 / (n_regions * sizes[positive_ids].astype(np.float64)) if n_regions else np.empty(0)
        self.cum_weight = np.concatenate([[0.0], np.cumsum(weights)])

    def at(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, PRO) once the first positions+1 sorted pixels are positive."""
        n_pos = self.curve.cum_pos[positions]
        fpr = (positions + 1 - n_pos) / self.n_neg
        pro = np.minimum(self.cum_weight[n_pos], 1.0)
        return fpr, pro


def integrate_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) for x in [x0, x_max]; x ascending, with y interpolated at x_max if needed."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = x <= x_max
    area = float(np.sum(0.5 * (y[keep][1:] + y[keep][:-1]) * np.diff(x[keep])))
    if not np.any(x == x_max):
        i = int(np.searchsorted(x, x_max, side="right"))
        if 0 < i < len(x):
            y_end = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
            area += 0.5 * (y_end + y[i - 1]) * (x_max - x[i - 1])
    return area


def aupro_exact(ss: SortedScores, pro: ProCurve, fpr_limit: float = 0.3) -> float:
    if not pro.valid:
        return math.nan
    fpr, overlap = pro.at(ss.ends)
    return integrate_to(np.concatenate([[0.0], fpr]), np.concatenate([[0.0], overlap]), fpr_limit) / fpr_limit


def aupro_legacy_cflow(ss: SortedScores, pro: ProCurve, dtype=np.float32, fpr_limit: float = 0.3, steps: int = 200) -> float:
    if not pro.valid:
        return math.nan
    values = ss.values.astype(dtype, copy=False)
    lo, hi = values[-1], values[0]
    delta = (hi - lo) / np.asarray(steps, dtype=dtype)
    if not delta > 0:
        return math.nan
    thresholds = np.arange(lo, hi, delta)
    # pixels with score > t are the first n_gt of the descending order
    n_gt = values.size - np.searchsorted(values[::-1], thresholds.astype(values.dtype), side="right")
    fpr, overlap = pro.at(np.maximum(n_gt - 1, 0))
    fpr, overlap = np.where(n_gt > 0, fpr, 0.0), np.where(n_gt > 0, overlap, 0.0)
    keep = fpr < fpr_limit
    fpr, overlap = fpr[keep], overlap[keep]
    if fpr.size < 2 or fpr.max() == fpr.min():
        return math.nan
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min())
    # FPR falls as the threshold rises; integrate along that order, as sklearn.metrics.auc does.
    return float(-np.trapezoid(overlap, fpr))
