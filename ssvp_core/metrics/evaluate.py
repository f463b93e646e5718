"""Per-class evaluation and the long-format results table.

Every metric is computed per class (memory bounded by one class) and then averaged over classes, as every peer
does. Policy for undefined metrics: a class without anomalous images (or without normal images, for AUROC) gets
NaN for the affected metrics and a MetricUndefinedWarning naming the class; the class mean is taken over the
classes where the metric is defined, and the table's `n_classes` column says how many that was.
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable

import numpy as np
import pandas as pd

from ..errors import MetricUndefinedWarning
from .pixel import AUPRO_VARIANTS, pixel_metrics
from .ranking import ranking_metrics

IMAGE_METRICS = ("image_auroc", "image_f1_max", "image_ap")
PIXEL_METRICS = ("pixel_auroc", "pixel_aupro", "pixel_ap", "pixel_f1_max", "pixel_aupro_legacy")
COLUMNS = ["dataset", "cls", "method", "metric", "value", "n_classes"]


def evaluate_class(scores, labels, maps=None, masks=None, fpr_limit: float = 0.3,
                   aupro: tuple[str, ...] = AUPRO_VARIANTS, cls: str = "?") -> dict[str, float]:
    """Image metrics from (scores, labels); pixel metrics from (maps, masks) when given."""
    out = {}
    img = ranking_metrics(scores, labels)
    out.update(image_auroc=img["auroc"], image_ap=img["ap"], image_f1_max=img["f1_max"])
    if maps is not None:
        px = pixel_metrics(maps, masks, fpr_limit, aupro)
        out.update(pixel_auroc=px["auroc"], pixel_ap=px["ap"], pixel_f1_max=px["f1_max"])
        if "aupro" in px:
            out["pixel_aupro"] = px["aupro"]
        if "aupro_legacy" in px:
            out["pixel_aupro_legacy"] = px["aupro_legacy"]
    undefined = sorted(k for k, v in out.items() if isinstance(v, float) and math.isnan(v))
    if undefined:
        labels_arr = np.asarray(labels)
        warnings.warn(
            f"class {cls!r}: {', '.join(undefined)} undefined ({int(labels_arr.sum())} anomalous of {labels_arr.size} images); "
            "set to NaN and left out of the class mean",
            MetricUndefinedWarning, stacklevel=2,
        )
    return out


def results_frame(per_class: dict[str, dict[str, float]], dataset: str, method: str) -> pd.DataFrame:
    """Long table: one row per (class, metric) plus a `mean` row per metric over the classes where it is defined."""
    rows = []
    metric_names: list[str] = []
    for cls, metrics in per_class.items():
        for name, value in metrics.items():
            if name not in metric_names:
                metric_names.append(name)
            rows.append((dataset, cls, method, name, float(value), 1))
    for name in metric_names:
        values = [m[name] for m in per_class.values() if name in m and not math.isnan(m[name])]
        rows.append((dataset, "mean", method, name, float(np.mean(values)) if values else math.nan, len(values)))
    return pd.DataFrame(rows, columns=COLUMNS)


def wide(frame: pd.DataFrame, index: Iterable[str] = ("dataset", "method", "cls")) -> pd.DataFrame:
    """Metrics as columns (one row per dataset/method/class)."""
    return frame.pivot_table(index=list(index), columns="metric", values="value", sort=False).reset_index()
