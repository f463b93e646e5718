"""Benchmark: `make demo` from empty folders, i.e. `ssvp reproduce --profile smoke --jobs 2` in a fresh workspace (no
data, runs or reports), timed as a whole and per notebook, against the README's goal of 5 minutes on a 2-core CPU.

The run is the CLI exactly as `make demo` calls it, in a child process, with the workspace given by `--workspace`;
the synthetic data generation is part of the total (it happens before the notebooks start). Per-notebook seconds
come from the report's status.json (two notebooks run at once, so they add up to more than the total). With
`--reference`, the same run again with the frozen-feature cache off, and the ratio of the two totals.

    python bench/demo.py [--jobs 2] [--reference] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 300.0
REPO = Path(__file__).resolve().parents[1]


def run_demo(workspace: Path, jobs: int, extra: list[str]) -> tuple[float, dict]:
    """Seconds of one `ssvp reproduce --profile smoke` from an empty workspace, and its status.json."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ssvp_core.cli", "--workspace", str(workspace), "reproduce",
                           "--profile", "smoke", "--jobs", str(jobs), *extra], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"ssvp reproduce failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, json.loads((workspace / "reports" / "smoke" / "status.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="notebooks at once (make demo: 2)")
    parser.add_argument("--reference", action="store_true", help="also run with train.feature_cache=off")
    parser.add_argument("--keep", type=Path, help="keep the workspace here instead of a deleted temporary folder")
    args = parser.parse_args()
    runs = [("default", [])] + ([("feature cache off", ["--set", "train.feature_cache=off"])] if args.reference else [])
    totals = {}
    for name, extra in runs:
        root = Path(tempfile.mkdtemp(prefix="ssvp-demo-")) if not args.keep else args.keep / name.replace(" ", "-")
        if root.exists() and any(root.iterdir()):
            sys.exit(f"{root} is not empty: the benchmark starts from an empty workspace")
        try:
            totals[name], status = run_demo(root, args.jobs, extra)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        print(f"\n{name}: ssvp reproduce --profile smoke --jobs {args.jobs} from an empty workspace")
        print(f"| notebook | seconds |\n|---|---:|")
        for notebook, entry in sorted(status.items(), key=lambda kv: -kv[1]["seconds"]):
            print(f"| {notebook} | {entry['seconds']:.0f} |")
        print(f"| **total (wall, data generation included)** | **{totals[name]:.0f}** |")
    cpu = f"{os.cpu_count()} cores"
    print(f"\ngoal: under {GOAL_S:.0f} s on a 2-core CPU ({cpu} here); default run {totals['default']:.0f} s = "
          f"{totals['default'] / GOAL_S:.2f} of the goal")
    if args.reference:
        print(f"ratio feature cache off / default: {totals['feature cache off'] / totals['default']:.2f}x")


if __name__ == "__main__":
    main()
