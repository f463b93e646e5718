"""GPU benchmark: every method at paper settings, one table — ms/img, img/s, peak memory, device, precision, batch.

Each method runs in its own process (`ssvp_core.reports.efficiency.measure`, the efficiency page's measurement) with
the paper profile's architectures and sizes (CLIP ViT-L/14-336 at 518 px; DINOv3 ViT-L/16 at 592 px for SSVP) and
each method's own released precision unless `--precision` overrides it. Random weights by default (speed does not
depend on the values; `--weights real` uses the paper profile's weights if they are on disk). Inference only: the
median over `--repeats` batches after a warm-up batch, synchronised; peak memory is torch's peak allocated memory.

    python bench/gpu.py [--batch 8] [--repeats 10] [--precision bf16] [--compile] [--out bench/results/gpu.md]
    python bench/gpu.py --cpu-check    # tiny smoke models on the CPU: checks the script, its numbers mean nothing

The Markdown table goes to stdout and, with --out, to a file that the efficiency page shows.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from ssvp_core.io import write_text
from ssvp_core.reports.efficiency import measure

METHODS = ["winclip", "aprilgan", "anomalyclip", "adaclip", "bayes_pfl", "vip2clip", "dapo", "visualad", "anomalyvfm",
           "ssvp"]
RANDOM = ["backbone.clip.pretrained=none", "backbone.dino.pretrained=none"]
COLUMNS = {"method": "method", "batch": "batch", "ms_per_image": "ms/img", "images_per_s": "img/s",
           "peak_memory_MB": "peak memory (MiB)", "precision": "precision", "gflops": "GFLOPs/img",
           "total_params_M": "params (M)", "trainable_params_M": "trainable (M)"}


def table(frame) -> str:
    shown = frame[list(COLUMNS)].rename(columns=COLUMNS)
    device = ", ".join(sorted(set(frame.device)))
    return f"Device: {device}\n\n" + shown.to_markdown(index=False, floatfmt=".2f") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="override every method's released precision")
    ap.add_argument("--compile", action="store_true", help="backbone.compile=true (the first batch compiles, untimed)")
    ap.add_argument("--weights", choices=["random", "real"], default="random")
    ap.add_argument("--out", help="also write the Markdown table here")
    ap.add_argument("--cpu-check", action="store_true", help="tiny smoke models on the CPU (checks the script only)")
    args = ap.parse_args(argv)
    if args.cpu_check:
        profile, device, overrides = "smoke", "cpu", []
    elif not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA device (none is visible here); `--cpu-check` runs it on tiny models on the CPU",
              file=sys.stderr)
        return 2
    else:
        profile, device = "paper", "cuda"
        overrides = RANDOM if args.weights == "random" else []
    overrides = overrides + ([f"backbone.precision={args.precision}"] if args.precision else [])
    overrides += ["backbone.compile=true"] if args.compile else []
    frame = measure(profile, args.methods, device, args.repeats, overrides, batch=args.batch)
    text = table(frame)
    if args.cpu_check:
        text = "CPU check on tiny random models (smoke profile): these numbers say nothing about GPU speed.\n\n" + text
    print(text)
    if args.out:
        write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
