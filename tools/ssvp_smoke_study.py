"""Smoke-profile study behind two SSVP defaults (README, SSVP: the VAE target and the evaluation latents).

For each seed and each value of `options.detach_vae_target`, SSVP is trained on synth-a's test split with the
learning tests' data and schedule (tests/learning.py: 10 epochs), then:
  * the loss parts of the history: the first step and the mean of the last epoch (seg, cls, vae, reg);
  * the gradient norm that each loss part sends into the global ATF (the module the reconstruction target comes
    from) on the first training batch, after training;
  * the held-out synth-b image and pixel AUROC of the same trained model under each `eval_latent` mode, the learned
    alpha of Eq. 11 and how far each mode moves T_final from the default's (max |delta| over 8 held-out images).

    PYTHONPATH=. .venv/bin/python tools/ssvp_smoke_study.py --out /tmp/ssvp-study --seeds 111 222 333
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ssvp_core.config import load_config
from ssvp_core.engine.infer import collate
from ssvp_core.engine.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the learning tests' data and metrics

from learning import generate_learning_data, held_out_means

EVAL_LATENTS = ("mu_and_samples", "mu", "samples")
PARTS = ("seg", "cls", "vae", "reg")


def fusion_gradients(detector, cfg) -> dict[str, float]:
    """|| d part / d global-ATF parameters || for each loss part, on the first batch of epoch 1."""
    from ssvp_core.data.loader import AnomalyDataset
    from ssvp_core.data.registry import read_dataset

    samples = read_dataset(cfg.train.dataset, cfg.train.root, "test")
    dataset = AnomalyDataset(samples, cfg.image_size, detector.input_sizes())
    batch = collate([dataset[i] for i in range(cfg.train.batch_size)])
    detector.train()
    torch.manual_seed(0)
    parts = detector.loss(detector(batch), batch)
    params = [p for p in detector.global_fusion.parameters() if p.requires_grad]
    norms = {}
    for name in PARTS:
        grads = torch.autograd.grad(parts[name], params, retain_graph=True, allow_unused=True)
        norms[name] = float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)))
    detector.eval()
    return norms


def t_final_by_mode(detector, cfg) -> dict[str, float]:
    """max |T_final(mode) - T_final(mu_and_samples)| on the first 8 held-out test images (unit-norm prompts)."""
    from ssvp_core.data.loader import AnomalyDataset
    from ssvp_core.data.registry import read_dataset

    ref = cfg.eval.datasets[0]
    samples = read_dataset(ref.name, ref.root, "test")[:8]
    dataset = AnomalyDataset(samples, cfg.image_size, detector.input_sizes())
    batch = collate([dataset[i] for i in range(len(dataset))])
    detector.eval()
    finals = {}
    for mode in EVAL_LATENTS:
        detector.options.eval_latent = mode
        with torch.inference_mode():
            finals[mode] = detector(batch).aux["t_final"]
    return {mode: float((finals[mode] - finals[EVAL_LATENTS[0]]).abs().max()) for mode in EVAL_LATENTS[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="work folder (data and runs are written here)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[111])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not (data / "synth-b" / "meta.json").is_file():  # the learning tests' training benchmark
        generate_learning_data(data, seed=0)
    results = []
    for seed in args.seeds:
        for detach in (False, True):
            cfg = load_config("smoke", "ssvp", [
                f"train.root={data}/synth-a", f"eval.datasets=[{{name: synth-b, root: '{data}/synth-b'}}]",
                f"out_dir={out}/runs", f"train.epochs={args.epochs}", f"train.seed={seed}",
                f"options.detach_vae_target={str(detach).lower()}"])
            result = train(cfg, progress=False)
            history = result.history
            last_epoch = [h for h in history if h["epoch"] == history[-1]["epoch"]]
            row = {"seed": seed, "detach_vae_target": detach,
                   "first_step": {k: history[0][k] for k in PARTS},
                   "last_epoch": {k: float(np.mean([h[k] for h in last_epoch])) for k in PARTS},
                   "global_atf_grad_norm": fusion_gradients(result.detector, cfg),
                   "alpha": float(result.detector.vcpg.alpha.detach()), "t_final_shift": t_final_by_mode(result.detector, cfg)}
            for mode in EVAL_LATENTS:
                result.detector.options.eval_latent = mode
                row[f"eval_{mode}"] = held_out_means(result.detector, cfg)
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\nmeans over seeds (image / pixel AUROC, held-out synth-b):")
    for detach in (False, True):
        rows = [r for r in results if r["detach_vae_target"] == detach]
        for mode in EVAL_LATENTS:
            img = [r[f"eval_{mode}"]["image_auroc"] for r in rows]
            px = [r[f"eval_{mode}"]["pixel_auroc"] for r in rows]
            print(f"detach_vae_target={detach!s:5} eval_latent={mode:14} image {np.mean(img):.3f} ± {np.std(img):.3f}  "
                  f"pixel {np.mean(px):.3f} ± {np.std(px):.3f}")


if __name__ == "__main__":
    main()
