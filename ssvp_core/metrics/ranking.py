"""Exact AUROC, average precision and F1-max from one descending sort with tie-aware cumulative sums.

Definitions match scikit-learn: ROC area by the trapezoidal rule over distinct thresholds (a tie between a positive
and a negative counts 1/2); AP = sum_k (R_k - R_{k-1}) P_k (sklearn's step definition); F1-max = max over
thresholds of 2PR / (P + R), as peers compute it from `precision_recall_curve`.
Undefined values (no positives, or for AUROC no negatives) are NaN; `evaluate` warns about them per class.

Speed: float32 maps are sorted as one int64 key per pixel (order-preserving integer image of the score in the high
32 bits, a payload such as the ground-truth region id in the low 32), which numpy sorts with its SIMD sort instead
of a much slower argsort.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def as_flat(scores, labels=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Flatten scores (float) and labels (bool) to 1-D numpy arrays; reject mismatched or non-finite input."""
    s = _numpy(scores).reshape(-1)
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    elif s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float32)
    if s.size and not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values; check the model output")
    if labels is None:
        return s, None
    y = _numpy(labels).reshape(-1)
    if s.size != y.size:
        raise ValueError(f"scores ({s.size} values) and labels ({y.size} values) differ in size")
    return s, y.astype(bool, copy=False)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def _float32_sort_key(values: np.ndarray) -> np.ndarray:
    """int32 keys with the same order as the float32 values (negative floats get their magnitude bits flipped)."""
    bits = values.view(np.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _float32_from_key(keys: np.ndarray) -> np.ndarray:
    return (keys ^ ((keys >> 31) & 0x7FFFFFFF)).view(np.float32)


@dataclass
class SortedScores:
    """Scores in descending order, the payload (label or region id) in the same order, and where ties end."""

    values: np.ndarray  # (N,) descending
    payload: np.ndarray  # (N,) int64; > 0 means positive
    ends: np.ndarray  # (T,) index of the last element of each run of equal scores

    @classmethod
    def build(cls, scores, labels=None, payload=None) -> "SortedScores":
        """Sort by score; `payload` (non-negative int, > 0 for positives) defaults to the labels as 0/1."""
        s, y = as_flat(scores, labels)
        if payload is None:
            if y is None:
                raise ValueError("give labels or a payload")
            payload = y.astype(np.int64)
        payload = np.asarray(payload).reshape(-1)
        if payload.size != s.size:
            raise ValueError(f"payload ({payload.size}) and scores ({s.size}) differ in size")
        if s.dtype == np.float32 and (payload.size == 0 or (payload.min() >= 0 and payload.max() < 2 ** 31)):
            key = _float32_sort_key(s).astype(np.int64)
            key <<= 32
            key |= payload.astype(np.int64)
            key = np.sort(key)[::-1]
            values = _float32_from_key((key >> 32).astype(np.int32))
            payload_sorted = key & 0xFFFFFFFF
        else:
            order = np.argsort(-s, kind="stable") if s.dtype != np.float32 else np.argsort(s, kind="stable")[::-1]
            values, payload_sorted = s[order], payload[order].astype(np.int64)
        changes = np.flatnonzero(values[1:] != values[:-1]) if values.size > 1 else np.empty(0, np.int64)
        ends = np.append(changes, values.size - 1) if values.size else np.empty(0, np.int64)
        return cls(np.ascontiguousarray(values), np.ascontiguousarray(payload_sorted), ends)


@dataclass
class Curve:
    """Cumulative counts at each distinct threshold, highest threshold first."""

    tps: np.ndarray  # float64
    fps: np.ndarray  # float64
    thresholds: np.ndarray
    positives: float
    negatives: float
    cum_pos: np.ndarray  # int64 (N,): positives among the first i+1 sorted items

    @classmethod
    def from_sorted(cls, ss: SortedScores) -> "Curve":
        cum_pos = np.cumsum(ss.payload > 0, dtype=np.int64)
        tps = cum_pos[ss.ends].astype(np.float64)
        fps = (ss.ends + 1).astype(np.float64) - tps
        positives = float(tps[-1]) if tps.size else 0.0
        negatives = float(fps[-1]) if fps.size else 0.0
        return cls(tps, fps, ss.values[ss.ends], positives, negatives, cum_pos)


def auroc_from_curve(c: Curve) -> float:
    if c.positives == 0 or c.negatives == 0:
        return math.nan
    tpr = np.concatenate([[0.0], c.tps / c.positives])
    fpr = np.concatenate([[0.0], c.fps / c.negatives])
    return float(np.trapezoid(tpr, fpr))


def _precision_recall(c: Curve) -> tuple[np.ndarray, np.ndarray]:
    return c.tps / (c.tps + c.fps), c.tps / c.positives


def ap_from_curve(c: Curve) -> float:
    if c.positives == 0:
        return math.nan
    precision, recall = _precision_recall(c)
    return float(np.dot(np.diff(recall, prepend=0.0), precision))


def f1_max_from_curve(c: Curve) -> tuple[float, float]:
    """(F1-max, the threshold that reaches it: predict anomalous when score >= threshold)."""
    if c.positives == 0:
        return math.nan, math.nan
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (TP + FP + P): same value as 2PR/(P+R), no division by zero.
    f1 = 2 * c.tps / (c.tps + c.fps + c.positives)
    best = int(np.argmax(f1))
    return float(f1[best]), float(c.thresholds[best])


def ranking_metrics(scores, labels) -> dict[str, float]:
    """AUROC, AP, F1-max (and its threshold) of one set of scores, from a single sort."""
    curve = Curve.from_sorted(SortedScores.build(scores, labels))
    f1, thr = f1_max_from_curve(curve)
    return {"auroc": auroc_from_curve(curve), "ap": ap_from_curve(curve), "f1_max": f1, "f1_threshold": thr}


def auroc(scores, labels) -> float:
    return ranking_metrics(scores, labels)["auroc"]


def average_precision(scores, labels) -> float:
    return ranking_metrics(scores, labels)["ap"]


def f1_max(scores, labels) -> float:
    return ranking_metrics(scores, labels)["f1_max"]
