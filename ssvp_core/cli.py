"""`ssvp` command line: data, train, eval, predict, reproduce, demo.

User errors (SSVPError) print one clear message and exit with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import SSVPError


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="synthesize, verify, summarize or index benchmark datasets")
    dsub = data.add_subparsers(dest="data_cmd", required=True)

    p = dsub.add_parser("synth", help="write the synthetic benchmark (MVTec layout) under OUT/synth-a and OUT/synth-b")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=192, help="image side in pixels")
    p.add_argument("--n-test-good", type=int, default=6)
    p.add_argument("--n-per-defect", type=int, default=4)
    p.set_defaults(func=cmd_data_synth)

    p = dsub.add_parser("verify", help="list every problem of a dataset on disk (exit 1 if any)")
    p.add_argument("name", help="benchmark name: mvtec, visa, btad, mpdd, dtd, ksdd2, rsdd, dagm, meta, synth-a, synth-b")
    p.add_argument("root")
    p.add_argument("--split", action="append", choices=["train", "test"], help="split(s) to check (default: test)")
    p.set_defaults(func=cmd_data_verify)

    p = dsub.add_parser("summary", help="images, anomalous images and masks per class")
    p.add_argument("name")
    p.add_argument("root")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.set_defaults(func=cmd_data_summary)

    p = dsub.add_parser("meta", help="export an AnomalyCLIP-style meta.json for a dataset")
    p.add_argument("name")
    p.add_argument("root")
    p.add_argument("--out", help="output file (default: ROOT/meta.json; an existing file is kept unless --force)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_data_meta)


def cmd_data_synth(args) -> int:
    from .data.synthetic import generate

    roots = generate(args.out, seed=args.seed, size=args.size, n_test_good=args.n_test_good, n_per_defect=args.n_per_defect)
    for name, root in roots.items():
        print(f"{name}: {root}")
    return 0


def cmd_data_verify(args) -> int:
    from .data.verify import verify_dataset

    problems = verify_dataset(args.name, args.root, tuple(args.split or ["test"]))
    for p in problems:
        print(p)
    if problems:
        print(f"\n{len(problems)} problem(s) in {args.name} at {args.root}", file=sys.stderr)
        return 1
    print(f"{args.name} at {args.root}: no problems found")
    return 0


def cmd_data_summary(args) -> int:
    from .data import read_dataset, summarize

    rows = summarize(read_dataset(args.name, args.root, args.split))
    print(f"{'class':<24}{'images':>8}{'anomalous':>11}{'masks':>7}")
    for cls, r in rows.items():
        print(f"{cls:<24}{r['images']:>8}{r['anomalous']:>11}{r['masks']:>7}")
    return 0


def cmd_data_meta(args) -> int:
    from .data import read_dataset
    from .data.meta import write_meta

    out = Path(args.out) if args.out else Path(args.root) / "meta.json"
    if out.exists() and not args.force:
        raise SSVPError(f"{out} exists; pass --force to replace it (the old file is replaced atomically) or --out elsewhere")
    splits = {"test": read_dataset(args.name, args.root, "test")}
    try:
        splits["train"] = read_dataset(args.name, args.root, "train")
    except SSVPError:
        splits["train"] = []
    print(write_meta(splits, args.root, out, dataset_name=args.name))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.profile, Path(args.out) if args.out else None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssvp", description="SSVP reproducibility kit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is being done")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_data(sub)
    p = sub.add_parser("demo", help="the main job on the embedded default (smoke profile)")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--out", help="report folder (default reports/<profile>)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SSVPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
