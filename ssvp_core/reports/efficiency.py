"""Efficiency of every method (the SSVP paper has none): parameters, GFLOPs, latency, throughput and peak memory.

Each method is measured in a fresh subprocess so that its peak resident memory (CPU) or peak allocated memory
(GPU) is its own. GFLOPs are counted by torch.utils.flop_counter on one forward pass of one image (matrix products
and convolutions; element-wise work is not counted). Latency is the median over `repeats` forward passes of a
batch (after one warm-up pass, which also compiles with `backbone.compile=true`), synchronised on GPU; ms/img and
img/s divide by the batch size. `bench/gpu.py` runs the same measurement for every method at paper settings.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

GPU_TABLE = "bench/results/gpu.md"  # where `bench/gpu.py --out` writes the table the efficiency page shows

_CHILD = r"""
import json, resource, statistics, sys, time, torch
from torch.utils.flop_counter import FlopCounterMode
from ssvp_core.config import load_config
from ssvp_core.methods import build_detector
profile, method, device, repeats, overrides, dataset = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5]), sys.argv[6]
n = int(sys.argv[7])
cfg = load_config(profile, method, overrides + [f"device={device}"])
det = build_detector(cfg).to(device).eval()
size = det.image_size
def make_batch(n):
    return {"image": torch.rand(n, 3, size, size, device=device), "cls": ["object"] * n, "dataset": [dataset] * n,
            "views": {s: torch.rand(n, 3, s, s, device=device) for s in det.input_sizes() if s != size}}
batch = make_batch(n)
counts = det.count_parameters()
for p in det.parameters():  # inference only; and torch's FLOP counter trips on a trainable parameter fed to a module
    p.requires_grad_(False)
with torch.inference_mode():
    det(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    with FlopCounterMode(display=False) as counter:
        det(make_batch(1))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); det(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
cuda = device.startswith("cuda")
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
precision = cfg.backbone.precision if cfg.backbone.precision != "auto" else ("bf16" if cuda else "fp32")
latency = statistics.median(times)
print(json.dumps({"method": method, "total_params_M": counts["total"] / 1e6, "trainable_params_M": counts["trainable"] / 1e6,
                  "gflops": counter.get_total_flops() / 1e9, "latency_ms": 1000 * latency, "batch": n,
                  "ms_per_image": 1000 * latency / n, "images_per_s": n / latency, "peak_memory_MB": peak,
                  "device": torch.cuda.get_device_name(torch.device(device)) if cuda else "cpu",
                  "precision": precision + (" + compile" if cfg.backbone.compile else "")}))
"""


def measure(profile: str, methods: list[str], device: str = "cpu", repeats: int = 3, overrides: list[str] | None = None,
            batch: int = 1) -> pd.DataFrame:
    """One row per method: parameters, GFLOPs, latency, throughput and peak memory (see the module docstring)."""
    from ..config import load_preset

    rows = []
    dataset = load_preset(profile).get("main_target", "mvtec")  # names the defect vocabulary DAPO's prompts are built for
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    for method in methods:
        proc = subprocess.run([sys.executable, "-c", _CHILD, profile, method, device, str(repeats), json.dumps(overrides or []),
                               dataset, str(batch)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"measuring {method} failed:\n{proc.stderr[-2000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return pd.DataFrame(rows)


DEFAULT_METHODS = ["winclip", "aprilgan", "anomalyclip", "adaclip", "bayes_pfl", "vip2clip", "dapo", "visualad",
                   "anomalyvfm", "ssvp"]


def measure_study(study, methods: list[str] | None = None, device: str = "auto") -> pd.DataFrame:
    """`measure` every method (default: all compared ones) with the study's profile and overrides, on the GPU when
    `device` is auto and one is present, with the preset's `efficiency_repeats` timed passes."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return measure(study.profile, list(methods or DEFAULT_METHODS), device,
                   repeats=study.section("efficiency_repeats", 3), overrides=list(study.overrides))


def read_gpu_table(path: str | os.PathLike = GPU_TABLE) -> tuple[str, pd.DataFrame] | None:
    """The device line and the table `bench/gpu.py --out PATH` wrote (Markdown), or None when there is none."""
    table = Path(path)
    if not table.is_file():
        return None
    lines = table.read_text().splitlines()
    device = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Device:")), "unknown device")
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
    if len(rows) < 3:
        raise ValueError(f"{path} holds no Markdown table with a header and rows; rewrite it with "
                         f"`python bench/gpu.py --out {path}`")
    frame = pd.DataFrame(rows[2:], columns=rows[0])  # rows[1] is the |---| separator
    for column in frame.columns[1:]:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.notna().all():
            frame[column] = numbers
    return device, frame
