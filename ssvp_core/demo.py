"""`ssvp demo`: the embedded default job on the smoke profile.

Generates the synthetic benchmark, trains SSVP with tiny random backbones on synth-a's test split (cached by
config fingerprint under runs/), evaluates it zero-shot on the held-out synth-b classes next to the
training-free reference scorer, and writes the table under reports/<profile>/.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import io
from .config import load_config, load_preset
from .engine.infer import evaluate
from .engine.train import train
from .methods import build_detector, method_spec
from .metrics import wide
from .synthdata import ensure_synthetic

SMOKE_BANNER = ("SMOKE PROFILE: tiny random backbones and synthetic data. These numbers check that the pipeline runs; "
                "they say nothing about how good any method is.")


def run_demo(profile: str = "smoke", out: Path | None = None, methods: tuple[str, ...] = ("reference", "ssvp")) -> Path:
    preset = load_preset(profile)
    synth = preset.get("synthetic") or {}
    ensure_synthetic(Path(preset["datasets"]["synth-a"]).parent, **synth)
    frames = []
    for method in methods:
        cfg = load_config(profile, method)
        detector = train(cfg).detector if method_spec(method).trainable else build_detector(cfg)
        frames += [evaluate(detector, ds, cfg).metrics for ds in cfg.eval.datasets]
    out = out or Path("reports") / profile
    table = wide(pd.concat(frames))
    io.write_text(out / "demo_metrics.csv", table.to_csv(index=False))
    banner = f"> {SMOKE_BANNER}\n\n" if profile == "smoke" else ""
    md = banner + table.to_markdown(index=False, floatfmt=".4f") + "\n"
    path = io.write_text(out / "demo_metrics.md", md)
    print(md)
    print(f"written: {path}")
    return path
