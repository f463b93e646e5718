"""Benchmark: the project's pixel metrics against the path peer repositories use, in one run.

Input: an MVTec-class-sized set of anomaly maps (default 100 maps of 518x518) with blob-shaped defects.
Peer path (AnomalyCLIP / Bayes-PFL / FAPrompt metrics.py): sklearn roc_auc_score + average_precision_score +
precision_recall_curve (F1-max) on the raveled maps, and cflow-ad's 200-threshold AUPRO with skimage labelling
and regionprops per threshold. Project path: ssvp_core.metrics.pixel_metrics (one sort for everything).
Prints wall time of each, the speed ratio, and the largest absolute difference per metric.

    python bench/metrics.py [--images 100] [--size 518] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from ssvp_core.metrics import pixel_metrics
from ssvp_core.metrics.reference import cflow_aupro, sklearn_pixel_metrics


def make_maps(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth anomaly maps with blob defects on roughly 70% of the images; scores correlate with the masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    masks = np.zeros((n, size, size), dtype=np.uint8)
    maps = np.zeros((n, size, size), dtype=np.float32)
    for i in range(n):
        m = np.zeros((size, size), bool)
        if rng.random() < 0.7:
            for _ in range(rng.integers(1, 4)):
                cx, cy = rng.uniform(0.15, 0.85, 2) * size
                rx, ry = rng.uniform(0.02, 0.12, 2) * size
                wobble = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 40) * 3
                m |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 + wobble < 1
        masks[i] = m
        noise = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 6) * 8
        maps[i] = ndimage.gaussian_filter(m.astype(np.float32), 4) * rng.uniform(0.5, 1.5) + 0.4 * noise
    return maps, masks


def peer_path(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    return {**sklearn_pixel_metrics(maps, masks), "aupro_legacy": cflow_aupro(masks, maps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}; input: {args.images} maps of {args.size}x{args.size} "
          f"({args.images * args.size ** 2 / 1e6:.1f} M pixels)")
    maps, masks = make_maps(args.images, args.size, args.seed)
    print(f"anomalous pixels: {masks.mean() * 100:.2f}%, images with defects: {int((masks.reshape(len(masks), -1).any(1)).sum())}")

    t0 = time.perf_counter()
    ours = pixel_metrics(maps, masks)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    peer = peer_path(maps, masks)
    t_peer = time.perf_counter() - t0

    print(f"\nproject (one sort: AUROC, AP, F1-max, AUPRO exact + legacy): {t_ours:8.2f} s")
    print(f"peer path (sklearn x3 + cflow-ad 200-step AUPRO):             {t_peer:8.2f} s")
    print(f"speed ratio (peer / project): {t_peer / t_ours:.1f}x\n")
    print(f"{'metric':<14}{'project':>16}{'peer':>16}{'|diff|':>12}")
    for name in ("auroc", "ap", "f1_max", "aupro_legacy"):
        print(f"{name:<14}{ours[name]:>16.10f}{peer[name]:>16.10f}{abs(ours[name] - peer[name]):>12.2e}")
    print(f"\nAUPRO exact (MVTec definition) {ours['aupro']:.6f} vs legacy_cflow200 {ours['aupro_legacy']:.6f}: "
          f"difference {ours['aupro'] - ours['aupro_legacy']:+.6f} (a definition difference, not an error)")


if __name__ == "__main__":
    main()
