"""Multi-type defect segmentation metrics (DAPO / MultiADS protocol, DAPO.md §8.2).

Per object, pixels are labelled 0 (normal) or with the position of the image's defect type in that object's
candidate list; scores are one column per candidate. Metrics: macro one-vs-rest AUROC and macro AP over the columns
(normal included), and macro F1 of the argmax prediction (over the classes present in the labels or the
predictions, as sklearn's `f1_score(average="macro")`). A candidate that never occurs in an object's test set has
an undefined AUROC/AP: it is left out of the macro mean with a MetricUndefinedWarning.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import MetricUndefinedWarning
from .ranking import ranking_metrics


def multitype_metrics(scores: np.ndarray, labels: np.ndarray, names: list[str] | None = None,
                      where: str = "?") -> dict:
    """scores (P, C) per-pixel class scores, labels (P,) in 0..C-1 -> macro AUROC / AP / F1 and per-class values."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    P, C = scores.shape
    if labels.shape[0] != P:
        raise ValueError(f"{P} score rows but {labels.shape[0]} labels")
    names = names or [str(c) for c in range(C)]
    per_class = {}
    undefined = []
    for c in range(C):
        positives = labels == c
        if positives.all() or not positives.any():
            per_class[names[c]] = {"auroc": math.nan, "ap": math.nan}
            undefined.append(names[c])
            continue
        m = ranking_metrics(scores[:, c].astype(np.float32), positives)
        per_class[names[c]] = {"auroc": m["auroc"], "ap": m["ap"]}
    pred = scores.argmax(1)
    present = np.union1d(np.unique(labels), np.unique(pred))
    f1s = {}
    for c in present:
        tp = np.sum((pred == c) & (labels == c))
        fp = np.sum((pred == c) & (labels != c))
        fn = np.sum((pred != c) & (labels == c))
        f1s[int(c)] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
        per_class.setdefault(names[int(c)], {})["f1"] = f1s[int(c)]
    if undefined:
        warnings.warn(f"{where}: defect types {undefined} do not occur (or are everything); their AUROC/AP are "
                      "NaN and left out of the macro mean", MetricUndefinedWarning, stacklevel=2)
    aurocs = [v["auroc"] for v in per_class.values() if "auroc" in v and not math.isnan(v["auroc"])]
    aps = [v["ap"] for v in per_class.values() if "ap" in v and not math.isnan(v["ap"])]
    return {
        "auroc": float(np.mean(aurocs)) if aurocs else math.nan,
        "ap": float(np.mean(aps)) if aps else math.nan,
        "f1": float(np.mean(list(f1s.values()))) if f1s else math.nan,
        "per_class": per_class,
    }
