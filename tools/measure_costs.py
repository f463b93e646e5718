"""Count the FLOPs of every configuration a profile's pages train or evaluate and store them in
ssvp_core/reports/data/costs.csv, which `ssvp plan` reads (ssvp_core/reports/costs.py says what is counted).

    PYTHONPATH=. python tools/measure_costs.py --profile paper     # full size on the CPU: minutes, ~10 GB of memory
    PYTHONPATH=. python tools/measure_costs.py --profile smoke
    PYTHONPATH=. python tools/measure_costs.py --profile paper --missing   # only what the table does not hold yet

Each configuration is built with random weights in its own process; the counts depend on shapes only.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ssvp_core.reports.costs import COSTS_CSV, count_flops, read_counts, write_counts  # noqa: E402
from ssvp_core.reports.plan import cost_configurations  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--only", nargs="+", help="pages (default: all)")
    ap.add_argument("--methods", nargs="+", help="count only these methods")
    ap.add_argument("--out", default=str(COSTS_CSV))
    ap.add_argument("--missing", action="store_true",
                    help="skip configurations the table already counts (finishes an interrupted run)")
    args = ap.parse_args(argv)
    random = ["backbone.clip.pretrained=none", "backbone.dino.pretrained=none"]
    configurations = cost_configurations(args.profile, args.only)
    stored = read_counts(args.out) if args.missing else {}
    configurations = [c for key, c in configurations.items() if key not in stored]
    # SSVP and every method's default backbones first: an interrupted run has counted what the plan needs most
    for method, overrides, backbones in sorted(configurations, key=lambda c: (bool(c[1]), c[0] != "ssvp")):
        if args.methods and method not in args.methods:
            continue
        started = time.time()
        count = count_flops(args.profile, method, list(overrides) + random)
        write_counts([count], args.out)  # one at a time: an interrupted run keeps what it counted
        print(f"{method:<12} {backbones:<60} eval {count.eval_per_image:10.1f} GFLOP/img  "
              f"step {count.step_per_image:10.1f} GFLOP/img  ({time.time() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
