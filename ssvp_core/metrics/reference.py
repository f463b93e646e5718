"""Reference implementations of the metric path peer repositories run (not used by the project's own metrics).

`cflow_aupro` is cflow-ad's `cal_pro_score` as AnomalyCLIP's metrics.py runs it: 200 thresholds, skimage labelling
and regionprops per threshold and image, FPR < 0.3, min-max rescaled FPR, sklearn `auc`. bench/metrics.py times the
project against it; the tests check `pixel_metrics(..., aupro=("legacy_cflow200",))` against it.
"""
from __future__ import annotations

import numpy as np


def cflow_aupro(masks: np.ndarray, amaps: np.ndarray, max_step: int = 200, expect_fpr: float = 0.3) -> float:
    from skimage import measure
    from sklearn.metrics import auc

    binary_amaps = np.zeros_like(amaps, dtype=bool)
    min_th, max_th = amaps.min(), amaps.max()
    delta = (max_th - min_th) / max_step
    pros, fprs = [], []
    for th in np.arange(min_th, max_th, delta):
        binary_amaps[amaps <= th], binary_amaps[amaps > th] = 0, 1
        pro = []
        for binary_amap, mask in zip(binary_amaps, masks):
            for region in measure.regionprops(measure.label(mask)):
                tp_pixels = binary_amap[region.coords[:, 0], region.coords[:, 1]].sum()
                pro.append(tp_pixels / region.area)
        inverse_masks = 1 - masks
        fp_pixels = np.logical_and(inverse_masks, binary_amaps).sum()
        pros.append(np.array(pro).mean())
        fprs.append(fp_pixels / inverse_masks.sum())
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < expect_fpr
    fprs = fprs[keep]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return auc(fprs, pros[keep])


def sklearn_pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """AUROC, AP and F1-max the way peers compute them (sklearn on the raveled maps)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    gt, pr = masks.ravel(), maps.ravel()
    precision, recall, _ = precision_recall_curve(gt, pr)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return {"auroc": roc_auc_score(gt, pr), "ap": average_precision_score(gt, pr), "f1_max": float(np.max(f1[np.isfinite(f1)]))}
