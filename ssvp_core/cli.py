"""`ssvp` command line: data, train, eval, predict, plan, run-plan, reproduce.

Exit status: 0 done; 1 done, but something needs a look (`predict` / `eval` of your own folder left out files that
could not be read, and say which; `data verify` found problems; a notebook of `reproduce` failed); 2 a user error
(SSVPError: one clear message, nothing or not everything done); 130 interrupted. Anything else is a bug and keeps
its traceback.
Paths typed as arguments are relative to the current folder; the data, runs and reports a preset names resolve in
the workspace (`--workspace`, `$SSVP_WORKSPACE`, or the marker file found from here; ssvp_core/workspace.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import SSVPError

EXIT_INCOMPLETE = 1  # finished, with files left out (listed) or problems found
EXIT_USER_ERROR = 2


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="synthesize, verify, summarize or index benchmark datasets")
    dsub = data.add_subparsers(dest="data_cmd", required=True)

    p = dsub.add_parser("synth", help="write the synthetic benchmark (MVTec layout) under OUT/synth-a and OUT/synth-b, "
                                      "or with --replica miniature replicas of real benchmarks' layouts under OUT/<name>")
    p.add_argument("out")
    p.add_argument("--replica", nargs="+", metavar="NAME",
                   help="replicas of real layouts instead: mvtec visa btad mpdd dtd ksdd2 ksdd rsdd dagm mad-sim mad-real "
                        "real-iad headct brainmri br35h isic colondb clinicdb endo kvasir, or all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, help="image side in pixels (default 192; replicas: long side, 64)")
    p.add_argument("--n-test-good", type=int, help="normal test images per class (default 6; replicas 2)")
    p.add_argument("--n-per-defect", type=int, help="anomalous test images per defect type (default 4; replicas 1)")
    p.add_argument("--classes", type=int, help="replicas: the first N of each benchmark's real classes (default all)")
    p.add_argument("--defect-types", type=int, help="replicas: the first N defect types per class (default all)")
    p.set_defaults(func=cmd_data_synth)

    p = dsub.add_parser("verify", help="list every problem of a dataset on disk (exit 1 if any)")
    p.add_argument("name", help="benchmark name: mvtec, visa, btad, mpdd, dtd, ksdd2, rsdd, dagm, meta, synth-a, synth-b, "
                                "folder (your own images: normal/, abnormal/, optional masks/), or any name for a folder")
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
    if args.replica:
        from .data.replicas import ReplicaSize, ensure_replica, replica_names

        size = ReplicaSize(classes=args.classes, defect_types=args.defect_types, per_defect=args.n_per_defect or 1,
                           test_good=2 if args.n_test_good is None else args.n_test_good, size=args.size or 64)
        for name in replica_names(args.replica):
            print(f"{name}: {ensure_replica(name, Path(args.out) / name, args.seed, size)}")
        return 0
    from .data.synthetic import generate

    roots = generate(args.out, seed=args.seed, size=args.size or 192, n_test_good=6 if args.n_test_good is None else args.n_test_good,
                     n_per_defect=args.n_per_defect or 4)
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
        return EXIT_INCOMPLETE
    print(f"{args.name} at {args.root}: no problems found")
    return 0


def cmd_data_summary(args) -> int:
    from .data import read_dataset, summarize

    rows = summarize(read_dataset(args.name, args.root, args.split))
    print(f"{'class':<24}{'images':>8}{'anomalous':>11}{'masks':>7}")
    for cls, r in rows.items():
        print(f"{cls:<24}{r['images']:>8}{r['anomalous']:>11}{r['masks']:>7}")
    unmasked = [cls for cls, r in rows.items() if r["anomalous"] > r["masks"]]
    if unmasked:
        print(f"\nno masks for the anomalous images of {', '.join(unmasked)}: `ssvp eval` reports image metrics only "
              "there, and `ssvp train` cannot use them")
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


def _run_config(args):
    from .config import load_config
    from .reports.experiments import Study

    Study(args.profile).ensure_data()  # a profile's generated data (smoke's synthetic set, the replicas) on first use
    overrides = list(args.set or [])
    if getattr(args, "train_on", None):
        overrides += _dataset_override("train", args.train_on, args.profile)
    if getattr(args, "eval_on", None):
        overrides += _dataset_override("eval", args.eval_on, args.profile)
    return load_config(args.profile, args.method, overrides)


def _dataset_override(section: str, names: list[str] | str, profile: str) -> list[str]:
    """`--train-on mvtec` / `--eval-on visa btad` resolved through the preset's dataset roots (NAME or NAME=ROOT)."""
    from .config import load_preset

    roots = load_preset(profile).get("datasets") or {}
    refs = []
    for item in ([names] if isinstance(names, str) else names):
        name, _, typed = item.partition("=")
        # a root typed on the command line is the user's path (from the current folder); a preset's root is the
        # workspace's (kept relative, resolved where it is read)
        root = str(Path(typed).expanduser().resolve()) if typed else roots.get(name) or f"data/{name}"
        refs.append((name, root))
    if section == "train":
        (name, root), = refs
        return [f"train.dataset={name}", f"train.root={root}"]
    return ["eval.datasets=[" + ", ".join(f"{{name: {n}, root: '{r}'}}" for n, r in refs) + "]"]


def cmd_train(args) -> int:
    from .engine.runtime import dist_info
    from .engine.train import train

    cfg = _run_config(args)
    result = train(cfg, resume=not args.restart, progress=not args.quiet)
    if dist_info().main:  # under torchrun every rank returns; one line of output, from rank 0
        print(result.checkpoint)
    return 0


def cmd_eval(args) -> int:
    import pandas as pd

    from . import io
    from .engine.infer import evaluate
    from .metrics import wide

    from .data.registry import reads_as_folder
    from .engine.checkpoint import CHECKPOINT_NAME
    from .engine.train import load_trained, run_dir
    from .methods import build_detector, method_spec

    if args.checkpoint:
        from .engine.checkpoint import load as load_checkpoint

        # an ssvp checkpoint names its method; an authors' released file needs --method (its read_released)
        args.method = args.method or load_checkpoint(args.checkpoint)["method"]
        detector, cfg = load_trained(args.checkpoint, overrides=_run_config(args))
    else:
        if not args.method:
            raise SSVPError("pass --method NAME (or --checkpoint FILE)")
        cfg = _run_config(args)
        if method_spec(cfg.method).trainable:
            path = run_dir(cfg) / CHECKPOINT_NAME
            if not path.is_file():
                raise SSVPError(f"{cfg.method} needs training first: no checkpoint at {path}. "
                                f"Run `ssvp train --method {cfg.method} --profile {cfg.profile}` or pass --checkpoint.")
            detector, cfg = load_trained(path, overrides=cfg)
        else:
            detector = build_detector(cfg)
    frames, multitype, results = [], [], []
    for ds in cfg.eval.datasets:
        hooks = []
        if args.multitype:
            if not hasattr(detector, "vocabulary"):
                raise SSVPError(f"--multitype needs a method with defect-type anchors (dapo), not {cfg.method}")
            from .engine.multitype import multitype_hook

            hooks = [multitype_hook(detector, ds.name)]
        tolerant = not args.strict and reads_as_folder(ds.name, ds.root)  # benchmarks are evaluated strictly
        result = evaluate(detector, ds, cfg, progress=not args.quiet, hooks=hooks, bootstrap=args.ci,
                          skip_unreadable=tolerant)
        frames.append(result.metrics)
        results.append((ds.name, result))
        if hooks:
            multitype.append((ds.name, result.extra["MultiTypeEvaluation"]))
    from .engine.runtime import dist_info

    if not dist_info().main:
        return 0  # rank 0 reports for the sharded run
    table = pd.concat(frames)
    left_out = [row for _, result in results for row in result.extra.get("unreadable", [])]
    if left_out:  # the metrics CSV itself says how many images each row's metrics lack
        counts = pd.DataFrame(left_out).groupby(["dataset", "cls"]).size()
        totals = pd.DataFrame(left_out).groupby("dataset").size()
        table["left_out"] = [int(totals.get(d, 0)) if c == "mean" else int(counts.get((d, c), 0))
                             for d, c in zip(table.dataset, table.cls)]
    if args.out:
        io.write_text(Path(args.out), table.to_csv(index=False))
        if left_out:
            io.write_text(_left_out_csv(args.out), pd.DataFrame(left_out).to_csv(index=False))
    w = wide(table)
    print(w.to_markdown(index=False, floatfmt=".4f"))
    for name, result in results:
        image_only = result.extra.get("image_only_classes") or []
        if image_only:
            print(f"\n{name}: no masks for the anomalous images of {', '.join(image_only)}; image metrics only there "
                  "(pixel metrics need masks: add a masks/ folder)")
        if "bootstrap" in result.extra:
            print(f"\n{name}: 95% confidence intervals of the class means (percentile bootstrap over images, "
                  f"{result.extra['bootstrap']['resamples']} resamples, stratified by class and label):")
            print(_interval_table(result).to_markdown(index=False, floatfmt=".4f"))
    for (name, result), ds in zip(results, cfg.eval.datasets):
        _print_left_out(name, ds.root, result, args.out)
    for name, mt in multitype:
        print(f"\nmulti-type segmentation on {name} (per object; macro OvR AUROC / AP, argmax F1):")
        print(mt["objects"].to_markdown(index=False, floatfmt=".4f"))
        if mt["skipped"]:
            print(f"objects without a candidate defect list (left out): {mt['skipped']}")
        if args.out:
            io.write_text(Path(args.out).with_suffix(f".multitype-{name}.csv"), mt["objects"].to_csv(index=False))
    if left_out:
        print(f"\n{len(left_out)} unreadable image(s) left out of the metrics (listed above"
              + (f" and in {_left_out_csv(args.out)}" if args.out else "") + "); --strict stops at the first instead",
              file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


def _left_out_csv(out: str) -> Path:
    return Path(out).with_suffix(".unreadable.csv")


SHOWN_WITH_CSV = 20  # with --out the full list is in a file; the terminal shows this many


def _print_left_out(name: str, root: str, result, out: str | None) -> None:
    """Which images of a dataset the metrics leave out, and why (evaluation of a `folder` dataset)."""
    left_out = result.extra.get("unreadable") or []
    if not left_out:
        return
    scored = len(result.samples)
    print(f"\n{name}: {len(left_out)} of {scored + len(left_out)} images could not be read and are left out of "
          "the metrics above:")
    shown = left_out[:SHOWN_WITH_CSV] if out else left_out
    for row in shown:
        file = Path(row["file"])
        file = file.relative_to(root) if file.is_relative_to(root) else file
        print(f"  {file} ({row['cls']}, {'anomalous' if row['label'] else 'normal'}): {row['reason']}")
    if len(shown) < len(left_out):
        print(f"  ... and {len(left_out) - len(shown)} more (all in {_left_out_csv(out)})")
    for cls in result.extra.get("unreadable_classes") or []:
        print(f"{name}: no metrics for {cls}: none of its images could be read")


def _interval_table(result):
    import pandas as pd

    from .metrics.bootstrap import dataset_resamples, percentile_interval

    classes = result.extra["bootstrap"]["classes"]
    metrics = list(dict.fromkeys(result.metrics.metric))
    rows = []
    for metric in metrics:
        values = dataset_resamples(classes, metric)
        if values is None:
            continue
        lo, hi = percentile_interval(values)
        mean = result.metrics[(result.metrics.cls == "mean") & (result.metrics.metric == metric)].value
        rows.append({"metric": metric, "value": float(mean.iloc[0]) if len(mean) else float("nan"), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def cmd_predict(args) -> int:
    from .engine.predict import predict_folder
    from .engine.runtime import dist_info
    from .engine.train import load_trained

    if not dist_info().main:
        return 0  # not sharded: under torchrun rank 0 alone writes the predictions and the gallery
    if args.checkpoint:
        released = None  # with --method, a file that is not an ssvp checkpoint is read as that method's release
        if args.method:
            from .config import load_config

            released = load_config(args.profile, args.method, list(args.set or []) + [f"device={args.device}"])
        detector, cfg = load_trained(args.checkpoint, device=args.device, overrides=released)
    else:
        from .config import load_config
        from .engine.runtime import resolve_device
        from .methods import build_detector, method_spec

        if not args.method:
            raise SSVPError("pass --checkpoint FILE (a trained method) or --method NAME (a training-free one)")
        if method_spec(args.method).trainable:
            raise SSVPError(f"{args.method} is trained: pass its --checkpoint (from `ssvp train`)")
        cfg = load_config(args.profile, args.method, list(args.set or []) + [f"device={args.device}"])
        detector = build_detector(cfg).to(resolve_device(cfg.device))
    run = predict_folder(detector, cfg, args.images, args.out, class_name=args.class_name, normal_dir=args.normal_dir,
                         quantile=args.quantile, pixel_quantile=args.pixel_quantile, strict=args.strict)
    if run.summary():
        print(run.summary(), file=sys.stderr)
    print(run.gallery)
    return 0 if run.complete else EXIT_INCOMPLETE


def cmd_reproduce(args) -> int:
    import os

    from .engine.runtime import dist_info
    from .reports.runner import reproduce

    if dist_info().enabled:
        # the notebooks run in their own kernels, one process each: rank 0 alone runs them (without the torchrun
        # variables, so no kernel waits for a process group) and writes the reports
        if not dist_info().main:
            return 0
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
                    "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
            os.environ.pop(key, None)
    index = reproduce(args.profile, only=args.only, jobs=args.jobs, overrides=args.set, force=args.force,
                      reports_dir=args.reports, verbose=args.verbose)
    import json

    status = json.loads((index.parent / "status.json").read_text())
    failed = [n for n, s in status.items() if s["status"] != "ok"]
    print(f"report: {index}")
    if failed:
        print(f"failed notebooks: {failed} (see the index for their errors)", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


def _plan(args):
    from .reports.costs import Throughput
    from .reports.efficiency import GPU_TABLE
    from .reports.experiments import Study
    from .reports.plan import build_plan

    study = Study(args.profile, overrides=args.set or ())
    study.ensure_data()  # the profile's generated data (smoke, rehearsal): the plan counts its images
    table = Path(args.gpu_table) if args.gpu_table else study.workspace.path(GPU_TABLE)
    throughput = Throughput.from_gpu_table(table, gpu=args.gpu, utilisation=args.utilisation)
    return build_plan(study, args.only, throughput)


def cmd_plan(args) -> int:
    plan = _plan(args)
    print(plan.render(by_method=args.by_method))
    if args.csv:
        from . import io

        io.write_text(Path(args.csv), plan.frame().to_csv(index=False))
    return 0


def cmd_run_plan(args) -> int:
    from .reports.execute import run_plan

    plan = _plan(args)
    totals = plan.totals()
    remaining = len(plan.todo())
    print(f"{remaining} of {len(plan.jobs)} job(s) to run for pages {' '.join(plan.pages)} "
          f"(estimated {totals['gpu_hours_remaining']:.3g} GPU-h; `ssvp plan` lists them)")
    summary = run_plan(plan, args.executor, address=args.address, gpus_per_job=args.gpus_per_job,
                       cpus_per_job=args.cpus_per_job, retries=args.retries)
    print(summary.render())
    if summary.failed:
        print(f"{len(summary.failed)} job(s) failed or were skipped; their errors are above and in {summary.folder}",
              file=sys.stderr)
        return 1
    again = " ".join([f"--profile {args.profile}"] + (["--only " + " ".join(args.only)] if args.only else [])
                     + [f"--set {s}" for s in args.set or []])
    print(f"every job is done: `ssvp reproduce {again}` renders the pages from these runs without training")
    return 0


def cmd_workspace(args) -> int:
    from .workspace import find

    ws = find()
    print(f"workspace: {ws.describe()}")
    for name, path in (("data", ws.data), ("runs", ws.runs), ("reports", ws.reports)):
        print(f"  {name:<8}{path}{'' if path.exists() else ' (not created yet)'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssvp", description="SSVP reproducibility kit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is being done")
    parser.add_argument("--workspace", metavar="DIR",
                        help="the folder holding data/, runs/ and reports/ (default: $SSVP_WORKSPACE, else the nearest "
                             "folder above the current one with a .ssvp-workspace file, else the source checkout, else "
                             "the current folder); `ssvp workspace` shows which")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_data(sub)
    for name, func, helptext in (("train", cmd_train, "train a method on the auxiliary dataset's test split"),
                                 ("eval", cmd_eval, "evaluate a method (trained checkpoint or training-free) per class")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--method", default="ssvp" if name == "train" else None)
        p.add_argument("--profile", default="smoke", help="preset: smoke | paper | rehearsal | path to a YAML file")
        p.add_argument("--train-on", help="auxiliary dataset: NAME or NAME=ROOT (roots default to the preset's)")
        p.add_argument("--eval-on", nargs="+", help="target datasets: NAME or NAME=ROOT ...")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. train.epochs=3 options.gamma=0.4")
        p.add_argument("--quiet", action="store_true")
        if name == "train":
            p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint instead of resuming")
        else:
            p.add_argument("--checkpoint", help="checkpoint to evaluate (default: the run folder of the config); with "
                                                "--method, also an authors' released file (visualad)")
            p.add_argument("--out", help="write the long-format metrics CSV here")
            p.add_argument("--multitype", action="store_true", help="also the per-object multi-type segmentation metrics (dapo)")
            p.add_argument("--ci", action="store_true", help="also 95%% bootstrap confidence intervals of the class means "
                                                             "(eval.bootstrap resamples over images)")
            p.add_argument("--strict", action="store_true",
                           help="your own folder datasets: stop at the first image that cannot be read (default: leave "
                                "it out of the metrics, list it, exit 1); benchmarks always stop")
        p.set_defaults(func=func)
    p = sub.add_parser("predict", help="scores, heat maps and (calibrated on normal images) labels and masks for a "
                                       "folder of your own images, with an HTML gallery")
    p.add_argument("images", help="folder of images to check")
    p.add_argument("--checkpoint", help="trained checkpoint (ssvp train)")
    p.add_argument("--method", help="a training-free method instead of a checkpoint (winclip, reference), or with "
                                    "--checkpoint the method of an authors' released checkpoint (visualad)")
    p.add_argument("--profile", default="smoke", help="preset for --method (smoke | paper | YAML)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override for --method")
    p.add_argument("--out", required=True, help="output folder (index.html, predictions.csv, heatmaps/, masks/)")
    p.add_argument("--normal-dir", help="folder of normal images only, to calibrate the thresholds on")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="image threshold = this quantile of the normal images' scores ('higher' method; default 0.99); "
                        "an image is anomalous when its score is above it")
    p.add_argument("--pixel-quantile", type=float, default=None,
                   help="pixel threshold = this quantile of the normal images' per-image map maxima (default: --quantile)")
    p.add_argument("--class-name", default="object", help="product name used in the text prompts")
    p.add_argument("--device", default="auto")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first file that cannot be read (default: list it, go on, exit 1 at the end)")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("workspace", help="show the workspace root, how it was found, and where data, runs and reports go")
    p.set_defaults(func=cmd_workspace)
    for name, func, helptext in (
            ("plan", cmd_plan, "list every training and evaluation the pages need (deduplicated), what the workspace "
                               "already holds, and their cost (FLOPs, GPU-hours)"),
            ("run-plan", cmd_run_plan, "run the plan's remaining jobs: in this process, or on a Ray cluster "
                                       "(--executor ray)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--profile", default="smoke", help="smoke | rehearsal | paper | a preset YAML")
        p.add_argument("--only", nargs="+", metavar="PAGE", help="pages (default: all): table1 table2 table3 table4 "
                                                                 "table5 qualitative tsne sensitivity efficiency vip2clip dapo")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="config override applied to every experiment (pass the same to `ssvp reproduce`)")
        p.add_argument("--gpu", default="A100", choices=["A100", "H100", "L40S"],
                       help="GPU class of the estimate (its dense peak TFLOP/s per precision; default A100)")
        p.add_argument("--utilisation", type=float, default=0.4,
                       help="share of the peak the jobs sustain (default 0.4, an assumption)")
        p.add_argument("--gpu-table", metavar="FILE",
                       help="bench/gpu.py's table: its measured ms/img replaces the assumption for the methods it has "
                            "(default: the workspace's bench/results/gpu.md when it exists)")
        if name == "plan":
            p.add_argument("--csv", metavar="FILE", help="also write the job table as CSV")
            p.add_argument("--by-method", action="store_true",
                           help="one row per method (jobs, TFLOP, GPU-hours) instead of one per job")
        else:
            p.add_argument("--executor", default="local", choices=["local", "ray"],
                           help="local: one job after the other in this process (default); ray: one task per job on "
                                "the Ray cluster at --address / $RAY_ADDRESS / started here with `ray start`")
            p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else the one on this machine)")
            p.add_argument("--gpus-per-job", type=float,
                           help="GPUs each job requests from Ray (default: 1 when the cluster has GPUs, else 0)")
            p.add_argument("--cpus-per-job", type=float,
                           help="CPUs each job requests from Ray (default: the cluster's CPUs per GPU, or 1)")
            p.add_argument("--retries", type=int, default=3,
                           help="times Ray retries a job whose worker process or node died (default 3); it resumes "
                                "from its last checkpoint")
        p.set_defaults(func=func)
    p = sub.add_parser("reproduce", help="run the notebooks (papermill) and build reports/<profile>/index.html")
    p.add_argument("--profile", default="smoke", help="smoke (tiny models, synthetic data) | rehearsal (the paper's settings on tiny models and "
                                                             "replicas of the real layouts) | paper | a preset YAML")
    p.add_argument("--only", nargs="+", help="notebook names (default: all): table1 table2 table3 table4 table5 "
                                             "qualitative tsne sensitivity efficiency vip2clip dapo")
    p.add_argument("--jobs", type=int, default=1, help="notebooks run at once")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override applied to every experiment")
    p.add_argument("--force", action="store_true", help="re-run notebooks even when nothing changed")
    p.add_argument("--reports", help="reports root (default: the workspace's reports/)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="show the kernels' own output (otherwise kept in each notebook's kernel.log)")
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    from .workspace import ENV

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workspace:  # through the environment, so that notebook kernels and worker processes resolve the same root
        os.environ[ENV] = str(Path(args.workspace).expanduser().resolve())
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SSVPError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
