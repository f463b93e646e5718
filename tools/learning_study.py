"""Seed study of the learning tests' protocol (tests/learning.py): how much training helps, across training seeds.

For each trained method and each seed, the untrained and the trained detector (smoke profile, tiny random backbones,
the tests' epochs) are evaluated on
  * held-out images: a second draw of the training classes (synth-a, generator seed 1), which the tests assert on;
  * held-out classes: synth-b, the papers' cross-domain protocol in miniature, which the tests do not assert on.
Prints, per method and protocol, the mean, smallest and largest gain (trained minus untrained) in image and pixel
AUROC as a markdown table, and writes every run to <out>/runs.csv.

    PYTHONPATH=. .venv/bin/python tools/learning_study.py --out /tmp/learning-study
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the protocol is the tests' own

from learning import TRAIN_SEEDS, generate_learning_data, untrained_and_trained
from test_learning import TRAINED


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="work folder (data, runs, runs.csv)")
    parser.add_argument("--methods", nargs="+", default=TRAINED)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(TRAIN_SEEDS))
    args = parser.parse_args(argv)
    train_root = args.out / "learn"
    held_out_root = args.out / "learn-held-out"
    for root, seed in ((train_root, 0), (held_out_root, 1)):
        if not (root / "synth-a").is_dir():
            generate_learning_data(root, seed)
    protocols = {"held-out images": (held_out_root, "synth-a"), "held-out classes": (train_root, "synth-b")}
    rows = []
    for method in args.methods:
        for protocol, (eval_root, eval_set) in protocols.items():
            for seed in args.seeds:
                before, after = untrained_and_trained(method, train_root, eval_root, eval_set,
                                                      args.out / "runs" / method / f"seed{seed}", seed)
                rows.append({"method": method, "protocol": protocol, "seed": seed,
                             **{f"{k}_before": before[k] for k in before}, **{f"{k}_after": after[k] for k in after}})
    runs = pd.DataFrame(rows)
    runs.to_csv(args.out / "runs.csv", index=False)
    for k in ("image_auroc", "pixel_auroc"):
        runs[f"{k}_gain"] = runs[f"{k}_after"] - runs[f"{k}_before"]
    lines = [f"seeds {args.seeds}; gain = trained minus untrained AUROC: mean [smallest, largest]", "",
             "| method | protocol | pixel AUROC untrained → trained (mean) | pixel gain | image gain |", "|---|---|---|---|---|"]
    for (method, protocol), g in runs.groupby(["method", "protocol"], sort=False):
        cells = [f"{g[f'{k}_gain'].mean():+.3f} [{g[f'{k}_gain'].min():+.3f}, {g[f'{k}_gain'].max():+.3f}]"
                 for k in ("pixel_auroc", "image_auroc")]
        lines.append(f"| {method} | {protocol} | {g.pixel_auroc_before.mean():.3f} → {g.pixel_auroc_after.mean():.3f} | "
                     + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
