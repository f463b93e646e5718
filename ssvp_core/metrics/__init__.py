"""Exact anomaly-detection metrics (see ranking.py, pro.py, pixel.py) and per-class evaluation (evaluate.py)."""
from .evaluate import IMAGE_METRICS, PIXEL_METRICS, evaluate_class, results_frame, wide
from .pixel import AUPRO_VARIANTS, pixel_metrics
from .ranking import auroc, average_precision, f1_max, ranking_metrics

__all__ = [
    "IMAGE_METRICS", "PIXEL_METRICS", "AUPRO_VARIANTS", "evaluate_class", "results_frame", "wide",
    "pixel_metrics", "auroc", "average_precision", "f1_max", "ranking_metrics",
]
