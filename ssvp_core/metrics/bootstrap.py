"""Bootstrap confidence intervals and a paired bootstrap test for the per-class metrics, exact and without re-sorting.

The estimator (what the reports print as "95% CI" and "p"):

* Unit and strata: test images, stratified by class and, inside a class, by label. Resample b draws, for every class,
  n0 of its n0 normal images and n1 of its n1 anomalous images uniformly with replacement. The draws come from a
  numpy `Generator` seeded by (seed, crc32("<dataset>/<class>")), so every method evaluated on the same dataset gets
  the *same* resamples: differences between methods are paired.
* A resample is the class's test set with image i repeated c_i times (c_i = how often it was drawn). Its image
  metrics are the ranking metrics of those scores; its pixel metrics are those of all pixels of the repeated images
  (pixel metrics resample whole images, never single pixels; a repeated image repeats its defect regions for PRO).
* Per resample the metric is computed per class, then averaged over the classes where it is defined, exactly as the
  point estimate is (metrics/evaluate.py) -> B resampled dataset means. Resampling happens after a detector's
  per-class rescoring (the scores the metrics see).
* 95% CI: the percentile interval, the 2.5% and 97.5% quantiles of the B means (numpy's default linear
  interpolation; resamples where the metric is undefined in every class are left out).
* Paired test "A vs B": d_b = mean_A,b - mean_B,b over the common resamples; two-sided p =
  min(1, 2 * min(#{d_b <= 0} + 1, #{d_b >= 0} + 1) / (B + 1)) (percentile-bootstrap test with the +1 correction,
  so it is never 0).

Exactness without re-sorting (`ResampledRanking`): a resample only changes how often each image counts. The one
descending sort of the class's scores (the one the metrics already make) therefore stays valid; every cumulative
count the curves need is a per-image cumulative count times the image's multiplicity. AUROC, AP, F1-max and the exact
AUPRO change only at tie runs that contain a positive, so the per-image cumulative counts are taken at those runs
(and just before them), and all B resamples are evaluated at once by a matrix product (counts x multiplicities),
chunk by chunk. The legacy 200-threshold AUPRO needs counts above 200 thresholds that depend on each resample's
min/max: one vectorized binary search per resample over the per-image sorted positions. The test suite checks every
metric against an explicit loop that materializes each resample (np.repeat) and calls the plain metrics.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from .pro import region_labels
from .ranking import SortedScores, as_flat

CONFIDENCE = 0.95
_CHUNK_ELEMENTS = 1 << 20  # elements of one (positions x images) or (positions x resamples) block


def resample_counts(labels, resamples: int, seed: int, key: str) -> np.ndarray:
    """(n_images, resamples) multiplicities: each column draws the normal and the anomalous images of one class
    with replacement, each group keeping its size. Seeded by (seed, crc32(key)), so it depends only on the data."""
    labels = np.asarray(labels).astype(bool).reshape(-1)
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode())])
    counts = np.zeros((labels.size, resamples), dtype=np.float64)
    for group in (np.flatnonzero(~labels), np.flatnonzero(labels)):
        if group.size == 0:
            continue
        draws = rng.integers(0, group.size, size=(resamples, group.size))
        for b in range(resamples):
            counts[group, b] = np.bincount(draws[b], minlength=group.size)
    return counts


@dataclass
class _Positions:
    """For each tie run that holds a positive element: its last sorted position `end` and the position just before
    the run `before` (-1 for a run at the top)."""

    end: np.ndarray
    before: np.ndarray


class ResampledRanking:
    """Ranking metrics of weighted copies of one class: groups (images) of scored elements (pixels, or one score per
    image), each group counted `w_g` times. `metrics(weights)` with weights (n_groups, B) returns, per metric, B values
    equal to the metric of the data set where group g is repeated w_g times.

    values: (n_groups, ...) scores; positive: same shape, bool. regions=True computes 8-connected defect regions per
    group (pixel data) for AUPRO.
    """

    def __init__(self, values, positive, regions: bool = False):
        values = np.asarray(values)
        positive = np.asarray(positive).astype(bool)
        if values.shape != positive.shape:
            raise ValueError(f"scores {values.shape} and labels {positive.shape} differ in shape")
        self.n_groups = values.shape[0]
        per_group = int(np.prod(values.shape[1:], dtype=np.int64)) if values.ndim > 1 else 1
        flat, _ = as_flat(values)
        n = flat.size
        ss = SortedScores.build(flat, payload=np.arange(n, dtype=np.int64))
        order = ss.payload
        self.values = ss.values  # descending
        self.group = (order // per_group).astype(np.int64)
        self.positive = positive.reshape(-1)[order]
        self.coverage = np.zeros(n, dtype=np.float64)  # 1 / size of the element's region, for positive elements
        self.regions_per_group = np.zeros(self.n_groups, dtype=np.float64)
        if regions:
            labels, sizes = region_labels(positive.reshape((self.n_groups,) + values.shape[-2:]))
            region = labels.reshape(-1)[order]
            hit = region > 0
            self.coverage[hit] = 1.0 / sizes[region[hit]]
            # regions are numbered image by image, so each image's count is its rise of the running maximum id
            highest = np.maximum.accumulate(labels.reshape(self.n_groups, -1).max(axis=1))
            self.regions_per_group = np.diff(highest, prepend=0).astype(np.float64)
        self.pos_per_group = np.bincount(self.group, weights=self.positive, minlength=self.n_groups)
        self.neg_per_group = np.bincount(self.group, minlength=self.n_groups) - self.pos_per_group
        ends = ss.ends
        starts = np.concatenate([[0], ends[:-1] + 1]) if ends.size else ends
        has_pos = np.add.reduceat(self.positive.astype(np.int64), starts) > 0 if ends.size else np.zeros(0, bool)
        self.runs = _Positions(ends[has_pos], starts[has_pos] - 1)
        self.has_regions = regions
        self._legacy_index = None

    # ---- exact all-threshold metrics for all resamples at once ----------------------------------------------
    def metrics(self, weights, fpr_limit: float = 0.3, legacy_aupro: bool = True, device=None) -> dict[str, np.ndarray]:
        """Per metric, the B values of the resamples `weights` (n_groups, B). The (runs x B) arithmetic runs in
        float64 torch on `device` (the evaluation's GPU in the paper profile), the rest in numpy."""
        import torch

        w = np.asarray(weights, dtype=np.float64)
        if w.ndim == 1:
            w = w[:, None]
        if w.shape[0] != self.n_groups:
            raise ValueError(f"weights for {w.shape[0]} groups, data has {self.n_groups}")
        B = w.shape[1]
        P = self.pos_per_group @ w
        N = self.neg_per_group @ w
        R = self.regions_per_group @ w
        f64 = dict(dtype=torch.float64, device=device)
        W, Pt, Nt, Rt = (torch.as_tensor(a, **f64) for a in (w, P, N, R))
        limit_n = fpr_limit * Nt  # the AUPRO limit in weighted negatives
        zero = torch.zeros(B, **f64)
        carry_tp, carry_fp, carry_cov = zero.clone(), zero.clone(), zero.clone()  # at the previous run's end
        roc, ap_sum, f1_best, pro_area = zero.clone(), zero.clone(), zero.clone(), zero.clone()
        for tp, fp_before, fp_end, cov in self._runs(B):
            TP = torch.cat([carry_tp[None], torch.as_tensor(tp, **f64) @ W])  # (runs + 1, B)
            FE = torch.cat([carry_fp[None], torch.as_tensor(fp_end, **f64) @ W])
            FB = torch.as_tensor(fp_before, **f64) @ W
            tp_prev, tp_now, fe_prev, fe_now = TP[:-1], TP[1:], FE[:-1], FE[1:]
            # ROC: a flat stretch (negatives only) up to each run, then the run's diagonal
            roc += ((FB - fe_prev) * tp_prev).sum(0) + 0.5 * ((fe_now - FB) * (tp_now + tp_prev)).sum(0)
            ap_sum += ((tp_now - tp_prev) * torch.nan_to_num(tp_now / (tp_now + fe_now), nan=0.0)).sum(0)
            f1_best = torch.maximum(f1_best, (tp_now / (tp_now + fe_now + Pt)).amax(0))
            if self.has_regions:
                COV = torch.cat([carry_cov[None], torch.as_tensor(cov, **f64) @ W])
                pro_area += _pro_segments(fe_prev, FB, fe_now, COV[:-1], COV[1:], Rt, limit_n)
                carry_cov = COV[-1]
            carry_tp, carry_fp = TP[-1], FE[-1]
        roc += (Nt - carry_fp) * carry_tp  # after the last positive run: negatives only
        roc, ap_sum, f1_best, pro_area = (t.cpu().numpy() for t in (roc, ap_sum, f1_best, pro_area))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {"auroc": np.where((P > 0) & (N > 0), roc / (P * N), np.nan),
                   "ap": np.where(P > 0, ap_sum / P, np.nan),
                   "f1_max": np.where(P > 0, 2 * f1_best, np.nan)}
            if self.has_regions:
                x_last, y_last = carry_fp.cpu().numpy() / N, np.minimum(carry_cov.cpu().numpy() / R, 1.0)
                pro_area = pro_area / N + _clipped_trapezoid(x_last, y_last, np.ones(B), y_last, fpr_limit)
                out["aupro"] = np.where((R > 0) & (N > 0), pro_area / fpr_limit, np.nan)
                if legacy_aupro:
                    out["aupro_legacy"] = self._legacy_aupro(w, fpr_limit)
        return out

    def _runs(self, resamples: int = 1):
        """Per chunk of positive runs, per image (runs, images): cumulative positives at each run's end, negatives
        just before and at the end of each run, and region coverage at each run's end. Chunks keep the (runs x
        images) and (runs x resamples) blocks near _CHUNK_ELEMENTS elements."""
        runs = self.runs
        m, G = runs.end.size, self.n_groups
        if m == 0:
            return
        step = max(1, _CHUNK_ELEMENTS // max(G, resamples))
        carry_pos, carry_neg, carry_cov = np.zeros(G), np.zeros(G), np.zeros(G)
        done = -1  # last sorted position already counted into the carries
        for k0 in range(0, m, step):
            end = runs.end[k0:k0 + step]
            before = runs.before[k0:k0 + step]
            queries = np.empty(2 * end.size, dtype=np.int64)  # before_0 <= end_0 <= before_1 <= ...
            queries[0::2], queries[1::2] = before, end
            span = slice(done + 1, int(end[-1]) + 1)
            segment = np.searchsorted(queries, np.arange(span.start, span.stop), side="left")  # first query at/after
            key = segment * G + self.group[span]
            size = queries.size * G
            pos = self.positive[span]
            cum_pos = np.cumsum(np.bincount(key, weights=pos, minlength=size).reshape(-1, G), axis=0) + carry_pos
            cum_neg = np.cumsum(np.bincount(key, weights=~pos, minlength=size).reshape(-1, G), axis=0) + carry_neg
            if self.has_regions:
                cnt_cov = np.bincount(key, weights=self.coverage[span], minlength=size).reshape(-1, G)
                cum_cov = np.cumsum(cnt_cov, axis=0) + carry_cov
                carry_cov = cum_cov[-1]
                cov = cum_cov[1::2]
            else:
                cov = None
            carry_pos, carry_neg, done = cum_pos[-1], cum_neg[-1], int(end[-1])
            yield cum_pos[1::2], cum_neg[0::2], cum_neg[1::2], cov

    # ---- cflow-ad's 200-threshold AUPRO (thresholds depend on each resample's min and max) --------------------
    def _legacy_aupro(self, w: np.ndarray, fpr_limit: float, steps: int = 200) -> np.ndarray:
        """Resamples that include the same extreme images share their thresholds; each such bucket is one matrix
        product of per-image counts above the thresholds with the bucket's multiplicities."""
        B = w.shape[1]
        out = np.full(B, np.nan)
        N = self.neg_per_group @ w
        R = self.regions_per_group @ w
        keys, cum_pos, cum_cov, group_start, gmin, gmax = self._legacy()
        used = w > 0
        lo = np.where(used, gmin[:, None], np.inf).min(axis=0).astype(self.values.dtype)
        hi = np.where(used, gmax[:, None], -np.inf).max(axis=0).astype(self.values.dtype)
        total_n = self.values.size
        groups = np.arange(self.n_groups)
        for (lo_b, hi_b), members in _buckets(lo, hi):
            delta = (hi_b - lo_b) / np.asarray(steps, dtype=self.values.dtype)
            if not delta > 0:
                continue
            thresholds = np.arange(lo_b, hi_b, delta).astype(self.values.dtype)
            # elements above each threshold are the first q of the descending order; count them per image
            q = total_n - np.searchsorted(self.values[::-1], thresholds, side="right")
            idx = np.searchsorted(keys, (groups[:, None] * total_n + q[None, :]).ravel(), side="left").reshape(self.n_groups, -1)
            inside = (idx - group_start[:, None]).astype(np.float64)  # each image's elements among the first q
            last = np.maximum(idx - 1, 0)
            n_pos = np.where(inside > 0, cum_pos[last], 0.0)
            cov = np.where(inside > 0, cum_cov[last], 0.0)
            wb = w[:, members]
            n_gt, tp, covered = wb.T @ inside, wb.T @ n_pos, wb.T @ cov  # (members, thresholds)
            Nb, Rb = N[members][:, None], R[members][:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                fpr = np.where(n_gt > 0, (n_gt - tp) / Nb, 0.0)
                overlap = np.where(n_gt > 0, np.minimum(covered / Rb, 1.0), 0.0)
            for row, b in enumerate(members):
                if R[b] == 0 or N[b] == 0:
                    continue
                keep = fpr[row] < fpr_limit
                f, o = fpr[row][keep], overlap[row][keep]
                if f.size < 2 or f.max() == f.min():
                    continue
                f = (f - f.min()) / (f.max() - f.min())
                out[b] = float(-np.trapezoid(o, f))
        return out

    def _legacy(self):
        """Elements grouped by image, in sorted order inside each image: key = image * N + position, with the
        running positive count and coverage of the image."""
        if self._legacy_index is None:
            n = self.values.size
            by_group = np.argsort(self.group, kind="stable")
            keys = self.group[by_group] * n + by_group
            group_start = np.searchsorted(keys, np.arange(self.n_groups) * n)
            pos = self.positive[by_group].astype(np.float64)
            cov = self.coverage[by_group]
            cum_pos, cum_cov = np.cumsum(pos), np.cumsum(cov)
            # running sums restart at each image
            offsets_pos = np.concatenate([[0.0], cum_pos])[group_start]
            offsets_cov = np.concatenate([[0.0], cum_cov])[group_start]
            sizes = np.diff(np.append(group_start, n))
            cum_pos -= np.repeat(offsets_pos, sizes)
            cum_cov -= np.repeat(offsets_cov, sizes)
            # values descend along the sort: an image's first element is its maximum, its last its minimum
            gmax = self.values[by_group[group_start]]
            gmin = self.values[by_group[group_start + sizes - 1]]
            self._legacy_index = (keys, cum_pos, cum_cov, group_start, gmin, gmax)
        return self._legacy_index


def _buckets(lo: np.ndarray, hi: np.ndarray):
    """((lo, hi), resample indices) for each distinct pair."""
    pairs: dict = {}
    for b, pair in enumerate(zip(lo.tolist(), hi.tolist())):
        pairs.setdefault(pair, []).append(b)
    for members in pairs.values():
        yield (lo[members[0]], hi[members[0]]), np.asarray(members)


def _pro_segments(fp_prev, fp_before, fp_end, cov_prev, cov, R, limit_n):
    """Area (x in weighted negatives, y = PRO) of each run's two segments, flat then diagonal, left of the limit;
    per resample (torch, (runs, B) inputs). Only rows that start left of the limit in some resample are touched
    (FPR grows along the runs: a prefix); the one segment per resample that crosses the limit is interpolated."""
    import torch

    rows = int((fp_prev < limit_n).any(dim=1).sum())
    if rows == 0:
        return torch.zeros_like(limit_n)
    fp_prev, fp_before, fp_end = fp_prev[:rows], fp_before[:rows], fp_end[:rows]
    y0, y1 = torch.clamp(cov_prev[:rows] / R, max=1.0), torch.clamp(cov[:rows] / R, max=1.0)
    inside_flat, inside_diag = fp_before <= limit_n, fp_end <= limit_n
    area = (torch.where(inside_flat, fp_before - fp_prev, 0.0) * y0).sum(0)
    area += 0.5 * (torch.where(inside_diag, fp_end - fp_before, 0.0) * (y0 + y1)).sum(0)
    for x0, x1, ya, yb, inside in ((fp_prev, fp_before, y0, y0, inside_flat), (fp_before, fp_end, y0, y1, inside_diag)):
        k, b = torch.nonzero(~inside & (x0 < limit_n), as_tuple=True)
        if k.numel():
            run = limit_n[b] - x0[k, b]
            y_at = ya[k, b] + run / (x1[k, b] - x0[k, b]) * (yb[k, b] - ya[k, b])
            area.index_add_(0, b, 0.5 * (ya[k, b] + y_at) * run)
    return area


def _clipped_trapezoid(x0, y0, x1, y1, limit: float):
    """Area under the segment (x0, y0)-(x1, y1) for x <= limit (x0 <= x1), elementwise."""
    full = 0.5 * (y0 + y1) * (x1 - x0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y_at = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
    partial = 0.5 * (y0 + y_at) * (limit - x0)
    return np.where(x1 <= limit, full, np.where(x0 < limit, partial, 0.0))


def bootstrap_class(scores, labels, maps=None, masks=None, weights=None, fpr_limit: float = 0.3,
                    aupro: tuple[str, ...] = ("exact", "legacy_cflow200"), device=None) -> dict[str, np.ndarray]:
    """Resampled metrics of one class, named as in metrics/evaluate.py (image_*, pixel_*), each (B,) float32."""
    labels = np.asarray(labels).astype(bool)
    image = ResampledRanking(np.asarray(scores, dtype=np.float64), labels).metrics(weights, fpr_limit, False, device)
    out = {f"image_{k}": v for k, v in image.items()}
    if maps is not None:
        pixel = ResampledRanking(np.asarray(maps), np.asarray(masks).astype(bool), regions=bool(aupro))
        px = pixel.metrics(weights, fpr_limit, "legacy_cflow200" in aupro, device)
        out.update(pixel_auroc=px["auroc"], pixel_ap=px["ap"], pixel_f1_max=px["f1_max"])
        if "exact" in aupro:
            out["pixel_aupro"] = px["aupro"]
        if "legacy_cflow200" in aupro:
            out["pixel_aupro_legacy"] = px["aupro_legacy"]
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


# ---- from per-class resamples to dataset intervals and tests ------------------------------------------------
def dataset_resamples(per_class: dict[str, dict[str, np.ndarray]], metric: str, cls: str = "mean") -> np.ndarray | None:
    """The B resampled values of `metric` for one class, or their mean over the classes where it is defined."""
    if cls != "mean":
        return per_class.get(cls, {}).get(metric)
    stacked = [m[metric] for m in per_class.values() if metric in m]
    if not stacked:
        return None
    arr = np.vstack(stacked).astype(np.float64)
    defined = np.isfinite(arr)
    count = defined.sum(axis=0)
    total = np.where(defined, arr, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def percentile_interval(resampled, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(low, high): the (1-c)/2 and (1+c)/2 quantiles of the finite resampled values (NaN when none)."""
    arr = np.asarray(resampled, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(arr, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def paired_p_value(resampled_a, resampled_b) -> float:
    """Two-sided percentile-bootstrap p-value of mean_A = mean_B from paired resamples (same draws for A and B)."""
    d = np.asarray(resampled_a, dtype=np.float64) - np.asarray(resampled_b, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    below, above = int((d <= 0).sum()), int((d >= 0).sum())
    return float(min(1.0, 2 * min(below + 1, above + 1) / (d.size + 1)))
