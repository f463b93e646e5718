"""Metrics against independent references: sklearn for ranking metrics, brute-force loops for PRO."""
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from ssvp_core.errors import MetricUndefinedWarning
from ssvp_core.metrics import evaluate_class, pixel_metrics, ranking_metrics, results_frame
from ssvp_core.metrics.reference import cflow_aupro


def _random_case(rng, n, kind):
    y = rng.random(n) < rng.uniform(0.05, 0.6)
    y[0], y[1] = True, False
    if kind == "continuous":
        s = rng.standard_normal(n) + y * rng.uniform(0, 2)
    elif kind == "ties":
        s = rng.integers(0, 4, n).astype(float) + y * rng.integers(0, 2, n)
    else:  # constant
        s = np.full(n, 0.3)
    return s.astype(np.float32), y


@pytest.mark.parametrize("kind", ["continuous", "ties", "constant"])
@pytest.mark.parametrize("seed", range(6))
def test_ranking_metrics_match_sklearn(kind, seed):
    rng = np.random.default_rng(seed)
    s, y = _random_case(rng, int(rng.integers(20, 400)), kind)
    ours = ranking_metrics(s, y)
    assert abs(ours["auroc"] - roc_auc_score(y, s)) < 1e-9
    assert abs(ours["ap"] - average_precision_score(y, s)) < 1e-9
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * p * r / (p + r)
    assert abs(ours["f1_max"] - np.max(f1[np.isfinite(f1)])) < 1e-9


def test_ranking_metrics_float64_and_torch_input():
    import torch

    rng = np.random.default_rng(1)
    s, y = rng.standard_normal(300), rng.random(300) < 0.3
    assert abs(ranking_metrics(torch.from_numpy(s), torch.from_numpy(y))["auroc"] - roc_auc_score(y, s)) < 1e-12


def test_f1_threshold_reaches_f1_max():
    rng = np.random.default_rng(3)
    s, y = _random_case(rng, 200, "continuous")
    m = ranking_metrics(s, y)
    pred = s >= m["f1_threshold"]
    tp, fp, fn = (pred & y).sum(), (pred & ~y).sum(), (~pred & y).sum()
    assert abs(2 * tp / (2 * tp + fp + fn) - m["f1_max"]) < 1e-12


def test_undefined_metrics_are_nan():
    s = np.array([0.1, 0.5, 0.9], dtype=np.float32)
    none_pos = ranking_metrics(s, np.zeros(3, bool))
    assert math.isnan(none_pos["auroc"]) and math.isnan(none_pos["ap"]) and math.isnan(none_pos["f1_max"])
    all_pos = ranking_metrics(s, np.ones(3, bool))
    assert math.isnan(all_pos["auroc"]) and all_pos["ap"] == 1.0


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="differ in size"):
        ranking_metrics(np.zeros(3), np.zeros(4))


# ---- PRO ------------------------------------------------------------------------------------------------------

def brute_force_pro_curve(maps, masks):
    """PRO and FPR at every distinct threshold t (positive: score >= t), by explicit region loops."""
    masks = masks.astype(bool)
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pos = maps >= t
        fprs.append((pos & normal).sum() / normal.sum())
        pros.append(np.mean([(pos[i] & r).sum() / r.sum() for i, r in regions]))
    return np.array(fprs), np.array(pros)


def brute_force_aupro(maps, masks, limit=0.3):
    fpr, pro = brute_force_pro_curve(maps, masks)
    # integrate by explicit segments up to the limit, interpolating the last one
    area = 0.0
    for k in range(1, len(fpr)):
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def _pixel_case(rng, n=4, size=24, kind="continuous"):
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            y, x = rng.integers(0, size - 6, 2)
            h, w = rng.integers(2, 7, 2)
            masks[i, y:y + h, x:x + w] = 1
        if rng.random() < 0.3:  # diagonal-only contact: one 8-connected region
            masks[i, 1, 1] = masks[i, 2, 2] = 1
    masks[0, 3:6, 3:6] = 1
    base = ndimage.gaussian_filter(masks.astype(float), (0, 1.5, 1.5)) + 0.4 * rng.random(masks.shape)
    if kind == "ties":
        base = np.round(base * 4) / 4
    if kind == "constant":
        base = np.full(masks.shape, 0.25)
    return base.astype(np.float32), masks


@pytest.mark.parametrize("kind", ["continuous", "ties"])
@pytest.mark.parametrize("seed", range(5))
def test_aupro_exact_matches_brute_force(kind, seed):
    maps, masks = _pixel_case(np.random.default_rng(seed), kind=kind)
    ours = pixel_metrics(maps, masks)
    assert abs(ours["aupro"] - brute_force_aupro(maps, masks)) < 1e-6


@pytest.mark.parametrize("seed", range(4))
def test_aupro_legacy_matches_cflow_loop(seed):
    maps, masks = _pixel_case(np.random.default_rng(100 + seed), n=3, size=20)
    ours = pixel_metrics(maps, masks, aupro=("legacy_cflow200",))
    assert abs(ours["aupro_legacy"] - cflow_aupro(masks, maps)) < 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_pixel_ranking_metrics_match_sklearn(seed):
    maps, masks = _pixel_case(np.random.default_rng(seed), kind="ties" if seed % 2 else "continuous")
    ours = pixel_metrics(maps, masks, aupro=())
    assert abs(ours["auroc"] - roc_auc_score(masks.ravel(), maps.ravel())) < 1e-9
    assert abs(ours["ap"] - average_precision_score(masks.ravel(), maps.ravel())) < 1e-9


def test_constant_maps():
    maps, masks = _pixel_case(np.random.default_rng(0), kind="constant")
    m = pixel_metrics(maps, masks)
    assert m["auroc"] == 0.5
    # one threshold: everything positive at once (FPR jumps 0 -> 1, PRO 0 -> 1); the area to 0.3 interpolates that line
    assert abs(m["aupro"] - brute_force_aupro(maps, masks)) < 1e-9
    assert abs(m["aupro"] - 0.15) < 1e-9
    assert math.isnan(m["aupro_legacy"])  # cflow's 200-step grid is empty for a constant map


def test_perfect_and_inverted_maps():
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, 4:8, 4:8] = 1
    perfect = pixel_metrics(masks.astype(np.float32), masks)
    assert perfect["auroc"] == 1.0 and abs(perfect["aupro"] - 1.0) < 1e-12
    inverted = pixel_metrics(1 - masks.astype(np.float32), masks)
    assert inverted["auroc"] == 0.0 and inverted["aupro"] == 0.0


def test_eight_connectivity_counts_diagonal_pixels_as_one_region():
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, 1, 1] = masks[0, 2, 2] = 1  # one region of 2 pixels under 8-connectivity, two under 4
    masks[0, 6, 6] = 1
    from ssvp_core.metrics.pro import region_labels

    _, sizes = region_labels(masks)
    assert list(sizes[1:]) == [2, 1]


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        pixel_metrics(np.zeros((2, 8, 8), np.float32), np.zeros((2, 8, 9)))


def test_class_without_anomalies_gets_nan_and_a_warning():
    rng = np.random.default_rng(0)
    maps, masks = _pixel_case(rng)
    good = evaluate_class(rng.random(4), np.array([1, 0, 1, 0]), maps, masks, cls="good-class")
    with pytest.warns(MetricUndefinedWarning, match="'normal-only'"):
        bad = evaluate_class(rng.random(4), np.zeros(4, int), maps, np.zeros_like(masks), cls="normal-only")
    assert math.isnan(bad["image_auroc"]) and math.isnan(bad["pixel_aupro"])
    frame = results_frame({"a": good, "b": bad}, "ds", "m")
    mean = frame[(frame.cls == "mean") & (frame.metric == "image_auroc")].iloc[0]
    assert mean.value == good["image_auroc"] and mean.n_classes == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_class(rng.random(4), np.array([1, 0, 1, 0]), maps, masks)
