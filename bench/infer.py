"""Benchmark: SSVP inference, in one run — where the time goes, and the fast paths against fp32 eager.

1. Share: for the tiny (smoke) and the full (paper architectures: CLIP ViT-L/14-336 at 518 px + DINOv3 ViT-L/16 at
   592 px, random weights) configurations, time the frozen backbone pass (`frozen_features`) and the heads on its
   output (`heads`: HSVS, prompts through the text encoder, VCPG, VTAM) separately; the heads' share of the total and
   images per second. CPU, fp32, torch.inference_mode.
2. Fast paths (`--modes`): whole-model images/s under fp32 eager (the reference), bf16 autocast
   (`backbone.precision=bf16`) and torch.compile of the backbone blocks (`backbone.compile=true`, fp32 and bf16), each
   with its ratio to fp32 eager and the largest difference of its anomaly maps and scores from fp32 eager's. The first
   compiled call (compilation) is excluded from the timing and reported on its own.

    python bench/infer.py [--configs tiny full] [--repeats 3] [--batch 1] [--modes fp32 bf16 compile compile-bf16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from ssvp_core.config import load_config
from ssvp_core.methods import build_detector

CONFIGS = {
    "tiny": ("smoke", []),
    "full": ("paper", ["backbone.clip.pretrained=none", "backbone.dino.pretrained=none", "device=cpu", "backbone.precision=fp32"]),
}


def fake_batch(det, n: int) -> dict:
    size = det.image_size
    batch = {"image": torch.rand(n, 3, size, size), "cls": ["bottle"] * n, "mask": torch.zeros(n, size, size),
             "label": torch.zeros(n, dtype=torch.long)}
    batch["views"] = {s: torch.rand(n, 3, s, s) for s in det.input_sizes() if s != size}
    return batch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny", "full"], choices=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, median of {args.repeats}")
    print(f"{'config':<6}{'backbones s':>13}{'heads s':>10}{'total s':>10}{'heads share':>13}{'img/s':>8}{'params (trainable)':>22}")
    for name in args.configs:
        measure(name, args.batch, args.repeats)
    if args.modes:
        print(f"\n{'config':<6}{'mode':<14}{'img/s':>8}{'vs fp32':>9}{'compile s':>11}{'max |map diff|':>16}{'max |score diff|':>18}")
        for name in args.configs:
            fast_paths(name, args.batch, args.repeats, args.modes)


MODES = {"fp32": ["backbone.precision=fp32"], "bf16": ["backbone.precision=bf16"],
         "compile": ["backbone.precision=fp32", "backbone.compile=true"],
         "compile-bf16": ["backbone.precision=bf16", "backbone.compile=true"]}


def fast_paths(name: str, batch_size: int, repeats: int, modes: list[str]) -> None:
    profile, overrides = CONFIGS[name]
    reference, base_rate = None, None
    for mode in ["fp32"] + [m for m in modes if m != "fp32"]:
        det = build_detector(load_config(profile, "ssvp", overrides + MODES[mode])).eval()
        torch.manual_seed(0)
        batch = fake_batch(det, batch_size)
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = det(batch)  # also compiles, for the compiled modes
            first = time.perf_counter() - t0
            seconds = timed(lambda: det(batch), repeats)
        if reference is None:
            reference, base_rate = out, batch_size / seconds
        rate = batch_size / seconds
        map_diff = float((out.anomaly_map.float() - reference.anomaly_map.float()).abs().max())
        score_diff = float((out.score.float() - reference.score.float()).abs().max())
        compile_s = f"{first - seconds:>11.1f}" if "compile" in mode else f"{'':>11}"
        print(f"{name:<6}{mode:<14}{rate:>8.3f}{rate / base_rate:>8.2f}x{compile_s}{map_diff:>16.2e}{score_diff:>18.2e}")


def measure(name: str, batch_size: int, repeats: int) -> None:
    profile, overrides = CONFIGS[name]
    det = build_detector(load_config(profile, "ssvp", overrides)).eval()
    batch = fake_batch(det, batch_size)
    with torch.inference_mode():
        backbone = timed(lambda: det.frozen_features(batch), repeats)
        features = det.frozen_features(batch)
        heads = timed(lambda: det.heads(features, batch), repeats)
    whole = backbone + heads
    counts = det.count_parameters()
    print(f"{name:<6}{backbone:>13.3f}{heads:>10.3f}{whole:>10.3f}{heads / whole:>12.1%}{batch_size / whole:>8.2f}"
          f"{counts['total'] / 1e6:>12.1f}M ({counts['trainable'] / 1e6:.1f}M)")


if __name__ == "__main__":
    main()
