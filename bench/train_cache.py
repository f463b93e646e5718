"""Benchmark: SSVP training seconds per epoch with and without the frozen-feature cache, in one run.

Both runs train the same model on the same images (the engine's own loop, `ssvp_core.engine.train.train`) from
empty run and cache folders; per-epoch times come from the steps' `elapsed_s`. Epoch 1 of the cached run includes
building the cache (one backbone pass per image); from epoch 2 on only the heads run. Configurations:

    tiny   the smoke profile (tiny random backbones, 128 px), the synthetic benchmark's synth-a test split
    full   the paper architectures with random weights (CLIP ViT-L/14-336 at 518 px + DINOv3 ViT-L/16 at 592 px),
           fp32 on the CPU, a few synthetic images (one class)

    python bench/train_cache.py [--configs tiny full] [--epochs 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch

from ssvp_core.config import load_config
from ssvp_core.data.synthetic import generate
from ssvp_core.engine.train import train

CONFIGS = {
    "tiny": ("smoke", dict(size=128, n_train_good=1, n_test_good=6, n_per_defect=3), []),
    "full": ("paper", dict(size=160, n_train_good=1, n_test_good=2, n_per_defect=1),
             ["backbone.clip.pretrained=none", "backbone.dino.pretrained=none", "device=cpu", "backbone.precision=fp32",
              "train.batch_size=4", "train.classes=[weave]", "train.num_workers=0"]),
}


def epoch_seconds(history: list[dict]) -> list[float]:
    ends = {}
    for record in history:
        ends[record["epoch"]] = record["elapsed_s"]
    marks = [0.0] + [ends[e] for e in sorted(ends)]
    return [b - a for a, b in zip(marks, marks[1:])]


def measure(name: str, epochs: int, work: Path) -> None:
    profile, synth, overrides = CONFIGS[name]
    data = work / name / "data"
    generate(data, seed=0, **synth)
    times = {}
    for cache in ("off", "on"):
        cfg = load_config(profile, "ssvp", overrides + [
            "train.dataset=synth-a", f"train.root={data / 'synth-a'}", f"train.epochs={epochs}",
            f"out_dir={work / name / cache}", f"train.feature_cache={cache}"])
        t0 = time.perf_counter()
        result = train(cfg, progress=False)
        times[cache] = (epoch_seconds(result.history), time.perf_counter() - t0, len(result.history))
    (off, off_total, steps), (on, on_total, _) = times["off"], times["on"]
    later = slice(1, None)
    ratio = (sum(off[later]) / len(off[later])) / (sum(on[later]) / len(on[later]))
    print(f"{name:<5} {steps // epochs:>3} steps/epoch | no cache: " + " ".join(f"{t:7.2f}" for t in off) +
          " | cache: " + " ".join(f"{t:7.2f}" for t in on) +
          f" | epochs 2+: {ratio:5.2f}x faster | whole run {off_total:7.1f} s -> {on_total:7.1f} s ({off_total / on_total:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny", "full"], choices=list(CONFIGS))
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; seconds per epoch (epoch 1 of the cached "
          f"run includes building the cache)")
    with tempfile.TemporaryDirectory(prefix="ssvp-bench-") as work:
        for name in args.configs:
            measure(name, args.epochs, Path(work))


if __name__ == "__main__":
    main()
