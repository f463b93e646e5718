"""`ssvp demo`: the embedded default job. Generates the synthetic benchmark and scores its held-out class set
with the training-free reference scorer through the real loader and metrics, then writes the table under
reports/<profile>/. (The smoke reproduction of the paper replaces this once the models exist.)"""
from __future__ import annotations

from pathlib import Path

from . import io
from .config import load_config, load_preset
from .engine.infer import evaluate
from .methods import build_detector
from .metrics import wide
from .synthdata import ensure_synthetic

SMOKE_BANNER = ("SMOKE PROFILE: tiny random backbones and synthetic data. These numbers check that the pipeline runs; "
                "they say nothing about how good any method is.")


def run_demo(profile: str = "smoke", out: Path | None = None) -> Path:
    preset = load_preset(profile)
    synth = preset.get("synthetic") or {}
    ensure_synthetic(Path(preset["datasets"]["synth-a"]).parent, **synth)
    cfg = load_config(profile, "reference")
    out = out or Path("reports") / cfg.profile
    frames = [evaluate(build_detector(cfg), ds, cfg).metrics for ds in cfg.eval.datasets]
    import pandas as pd

    table = wide(pd.concat(frames))
    io.write_text(out / "demo_metrics.csv", table.to_csv(index=False))
    md = f"> {SMOKE_BANNER}\n\n" + table.to_markdown(index=False, floatfmt=".4f") + "\n"
    path = io.write_text(out / "demo_metrics.md", md)
    print(md)
    print(f"written: {path}")
    return path
