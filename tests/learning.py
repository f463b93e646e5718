"""Shared protocol of the learning tests: held-out-class metrics of an untrained and a trained detector."""
import torch

from tiny import smoke_config
from ssvp_core.engine.infer import evaluate
from ssvp_core.engine.train import train
from ssvp_core.methods import build_detector
from ssvp_core.metrics import wide


def held_out_means(detector, cfg, dataset=None) -> dict[str, float]:
    table = wide(evaluate(detector, dataset or cfg.eval.datasets[0], cfg, progress=False).metrics)
    row = table[table.cls == "mean"].iloc[0]
    return {"image_auroc": float(row.image_auroc), "pixel_auroc": float(row.pixel_auroc)}


def untrained_and_trained(method: str, root, out, *overrides: str) -> tuple[dict, dict]:
    """Metrics before and after 10 epochs of smoke-profile training (the margins in the README were measured so)."""
    cfg = smoke_config(method, f"out_dir={out}", "train.epochs=10", *overrides, root=root)
    torch.manual_seed(0)
    before = held_out_means(build_detector(cfg), cfg)
    after = held_out_means(train(cfg, progress=False).detector, cfg)
    print(f"{method}: held-out synth-b means before {before} after {after}")
    return before, after
