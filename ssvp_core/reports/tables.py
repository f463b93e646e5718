"""Tables of the paper, rebuilt from cached experiments, with the paper's own numbers and the deltas beside ours.

Each table has two functions: `<table>_jobs(study, ...)` lists the models and evaluations it reads (what its
notebook trains and evaluates, one step each, and what `ssvp plan` counts), and `<table>(study, jobs)` assembles
it from their cached results. Every builder returns a long DataFrame (dataset, cls, method, metric, reproduced,
paper, delta) in percent; `wide` pivots it for display. Paper numbers come from `reports.reported`: the paper's own
tables, and for Table 1's methods published after SSVP (VisualAD, AnomalyVFM) their own published numbers.
Our `pixel_aupro_legacy` (cflow-ad 200 thresholds) is the one compared with the papers' "PRO"; the exact MVTec
AUPRO is shown next to it without a paper value.

Tables 1 and 2 also carry a 95% bootstrap confidence interval (ci_low, ci_high; metrics/bootstrap.py states the
estimator) and `versus_best_baseline` a paired bootstrap test of SSVP against the strongest other method. Where the
paper's number belongs to another dataset than ours (the smoke profile's synthetic set stands in for MVTec-AD:
`paper_alias`), it is kept as a labelled reference (`paper_dataset`) and no delta is computed: a synthetic class
minus MVTec-AD's number means nothing.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..methods import method_spec
from ..metrics.bootstrap import dataset_resamples, paired_p_value, percentile_interval
from .experiments import EvalJob, Model, Study
from .reported import reported

CI = "95% CI"

# SSVP's Table 1 methods, and the two 2026 methods with public code and weights that lead the zero-shot boards
# since (VisualAD, AnomalyVFM; their own published numbers stand in the paper column)
TABLE1_METHODS = ["winclip", "aprilgan", "anomalyclip", "adaclip", "bayes_pfl", "visualad", "anomalyvfm", "ssvp"]
TABLE2_METHODS = ["winclip", "anomalyclip", "adaclip", "bayes_pfl", "ssvp"]
QUALITATIVE_METHODS = ["adaclip", "bayes_pfl", "ssvp"]
VIP2CLIP_METHODS = ["winclip", "aprilgan", "anomalyclip", "adaclip", "vip2clip"]
VIP2CLIP_METRICS = ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro_legacy", "pixel_f1_max"]
IMAGE_METRICS = ["image_auroc", "image_f1_max", "image_ap"]
PIXEL_METRICS = ["pixel_auroc", "pixel_aupro_legacy", "pixel_ap", "pixel_aupro"]
PAPER_METRIC = {"pixel_aupro_legacy": "pixel_aupro", "pixel_aupro": None}  # ours -> the paper's column
# Table 3 of SSVP: the baseline (A) is Bayes-PFL re-run; B-E switch SSVP's components on one by one
ABLATION_REFERENCE = "ssvp"  # the method whose resolved settings row A shares
# What "all models employ the same training configuration parameters, with the epoch set to 15 and the batch size
# set to 8" (SSVP §4.2) gives row A, by `baseline` setting:
#   shared_schedule (default): the optimisation schedule of rows B-E (epochs, batch size, optimiser, betas, weight
#     decay, LR schedule and warm-up) and their test-time smoothing sigma, so that the A -> E deltas measure the
#     components. Bayes-PFL keeps what makes it Bayes-PFL: its model, losses, Monte-Carlo sampling, the learning
#     rates of its own parameter groups (SSVP's 5e-4 / 1e-4 are stated for SSVP's prompts, VAE and projections)
#     and its released backbone settings (CLIP activation, precision).
#   shared_schedule_and_backbone: also SSVP's CLIP activation and backbone precision (one frozen CLIP for all rows).
#   released: Bayes-PFL's own released settings throughout (its registered train/eval/backbone defaults).
BASELINE_SHARED_KEYS = {
    "shared_schedule": ("train.epochs", "train.batch_size", "train.optimizer", "train.betas", "train.weight_decay",
                        "train.schedule", "train.warmup_frac", "eval.sigma"),
    "released": (),
}
BASELINE_SHARED_KEYS["shared_schedule_and_backbone"] = BASELINE_SHARED_KEYS["shared_schedule"] + (
    "backbone.clip.activation", "backbone.precision")
ABLATION = {
    "A": ("bayes_pfl", ()),
    "B": ("ssvp", ("options.fusion=concat", "options.vcpg=false", "options.vtam=false")),
    "C": ("ssvp", ("options.vcpg=false", "options.vtam=false")),
    "D": ("ssvp", ("options.vtam=false",)),
    "E": ("ssvp", ()),
}
IDENTITY_BASELINE = ("options.fusion=none", "options.vcpg=false", "options.vtam=false")  # Table 4's "Baseline (Identity)"


def _paper_value(paper: pd.DataFrame, dataset: str, method: str, metric: str, cls: str = "mean") -> float:
    name = PAPER_METRIC.get(metric, metric)
    if name is None:
        return math.nan
    rows = paper[(paper.dataset == dataset) & (paper.method == method) & (paper.metric == name) & (paper.cls == cls)]
    return float(rows.value.iloc[0]) if len(rows) else math.nan


def _row(dataset, cls, method, metric, ours: float, paper_value: float, paper_dataset: str | None = None,
         **extra) -> dict:
    """One table cell in percent. `paper_dataset` other than `dataset`: the paper value is a reference, no delta."""
    reproduced = 100 * ours if not math.isnan(ours) else math.nan
    comparable = paper_dataset is None or paper_dataset == dataset
    delta = reproduced - paper_value if comparable and not (math.isnan(reproduced) or math.isnan(paper_value)) else math.nan
    return {"dataset": dataset, "cls": cls, "method": method, "metric": metric, "reproduced": reproduced,
            "paper": paper_value, "delta": delta, "paper_dataset": paper_dataset or dataset, **extra}


def resamples(ev, metric: str, cls: str = "mean") -> np.ndarray | None:
    """The bootstrap resamples of a metric (class mean, or one class) of an evaluation, in percent."""
    boot = (getattr(ev, "extra", None) or {}).get("bootstrap")
    if not boot:
        return None
    values = dataset_resamples(boot["classes"], metric, cls)
    return None if values is None else 100 * np.asarray(values, dtype=np.float64)


def interval(ev, metric: str, cls: str = "mean") -> dict:
    values = resamples(ev, metric, cls)
    lo, hi = percentile_interval(values) if values is not None else (math.nan, math.nan)
    return {"ci_low": lo, "ci_high": hi}


# -- what each table reads: the jobs a notebook trains and evaluates before assembling it (and `ssvp plan` lists) --
def comparison_jobs(study: Study, datasets: list[str], methods: list[str]) -> list[EvalJob]:
    """Every (dataset, method) of a Table-1 layout, evaluated with bootstrap resamples for the CIs."""
    return [EvalJob(Model(method, ds), bootstrap=True) for ds in datasets for method in methods]


def table1_jobs(study: Study, datasets: list[str] | None = None, methods: list[str] | None = None) -> list[EvalJob]:
    return comparison_jobs(study, study.datasets(datasets, "table1_datasets"), list(methods or TABLE1_METHODS))


def table2_jobs(study: Study, dataset: str | None = None, methods: list[str] | None = None) -> list[EvalJob]:
    return comparison_jobs(study, [dataset or study.main_target], list(methods or TABLE2_METHODS))


def table3_jobs(study: Study, dataset: str | None = None, seeds: list[int] | None = None,
                baseline: str = "shared_schedule") -> list[EvalJob]:
    """Models A-E of the ablation, once per seed; row A's overrides copy the settings of rows B-E named by
    `baseline` (BASELINE_SHARED_KEYS), so that the caller's overrides still win."""
    target = dataset or study.main_target
    seeds = list(seeds or study.section("ablation_seeds", [111, 222, 333]))
    shared = baseline_overrides(study, target, baseline)
    return [EvalJob(Model(method, target, (shared if row == "A" else ()) + tuple(switches), seed, label=row))
            for row, (method, switches) in ABLATION.items() for seed in seeds]


def table4_models(study: Study, dataset: str | None = None) -> list[Model]:
    """Table 4 compares the Identity baseline (SSVP without HSVS, VCPG, VTAM) with full SSVP."""
    target = dataset or study.main_target
    return [Model("ssvp", target, IDENTITY_BASELINE, label="baseline"), Model("ssvp", target, label="ssvp")]


def qualitative_models(study: Study, dataset: str | None = None, other_datasets: list[str] | None = None) -> list[Model]:
    """Figures 3-5: AdaCLIP, Bayes-PFL and SSVP on the main target (Figure 3), Bayes-PFL and SSVP on the others."""
    target = dataset or study.main_target
    others = list(other_datasets if other_datasets is not None else study.section("figure5_datasets", []))
    return ([Model(m, target) for m in QUALITATIVE_METHODS]
            + [Model(m, ds) for ds in others for m in ("bayes_pfl", "ssvp")])


def tsne_models(study: Study, dataset: str | None = None) -> list[Model]:
    """Figure 6: the Identity baseline's and SSVP's prompt embeddings on one dataset."""
    target = dataset or study.section("figure6_dataset", "btad")
    return [Model("ssvp", target, IDENTITY_BASELINE, label="Baseline"), Model("ssvp", target, label="SSVP")]


def table5_jobs(study: Study, dataset: str | None = None) -> list[EvalJob]:
    """SSVP once per auxiliary backbone of the preset's `table5` list."""
    target = dataset or study.main_target
    return [EvalJob(Model("ssvp", target, tuple(entry.get("overrides", [])), label=entry["label"]))
            for entry in study.section("table5", [])]


def sensitivity_jobs(study: Study, parameter: str, values: list[float], dataset: str | None = None) -> list[EvalJob]:
    """SSVP once per value of one option (step-wise coordinate search: the other option at its default). The value
    the profile already runs with needs no override, so that point is the model the other pages train (one training
    fewer per sweep)."""
    target = dataset or study.main_target
    default = study.option("ssvp", target, parameter)
    return [EvalJob(Model("ssvp", target, () if v == default else (f"options.{parameter}={v}",),
                          label=f"{parameter}={v}")) for v in values]


def sensitivity_grid(study: Study, gammas: list[float] | None = None, xis: list[float] | None = None) -> dict:
    """The values of each sweep: the caller's, else the preset's `sensitivity`, else the paper's six each."""
    grid = study.section("sensitivity", {}) or {}
    return {"gamma": list(gammas or grid.get("gamma", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])),
            "xi": list(xis or grid.get("xi", [0.70, 0.75, 0.80, 0.85, 0.90, 0.95]))}


def figure5_datasets(study: Study, given: list[str] | None = None) -> list[str]:
    return list(given if given is not None else study.section("figure5_datasets", []))


def medical_datasets(study: Study) -> tuple[list[str], list[str]]:
    """The preset's ViP2-CLIP medical sets found on disk, and the others as 'name (expected root)'."""
    names = list(study.section("vip2clip_medical", []) or [])
    present = [ds for ds in names if study.dataset_root(ds).exists()]
    return present, [f"{ds} ({study.dataset_root(ds)})" for ds in names if ds not in present]


def vip2clip_jobs(study: Study, datasets: list[str] | None = None, methods: list[str] | None = None) -> list[EvalJob]:
    return comparison_jobs(study, study.datasets(datasets, "vip2clip_datasets"), list(methods or VIP2CLIP_METHODS))


def dapo_jobs(study: Study, datasets: list[str] | None = None) -> list[EvalJob]:
    return [EvalJob(Model("dapo", ds), multitype=True) for ds in study.datasets(datasets, "dapo_datasets")]


# -- the tables, assembled from the cached evaluations of their jobs ------------------------------------------------
def comparison(study: Study, jobs: list[EvalJob], metrics: list[str], paper: pd.DataFrame) -> pd.DataFrame:
    """Dataset-mean metrics of every job's (dataset, method) beside the paper's numbers (the layout of both papers'
    Table 1), with the bootstrap interval of each."""
    rows = []
    for job in jobs:
        ev = study.evaluation(job)
        paper_ds = study.paper_dataset(job.target)
        for metric in metrics:
            rows.append(_row(job.target, "mean", job.method, metric, ev.mean(metric),
                             _paper_value(paper, paper_ds, job.method, metric), paper_ds,
                             trained_on=study.trained_on(job.method, job.target), **interval(ev, metric)))
    return pd.DataFrame(rows)


def versus_best_baseline(study: Study, jobs: list[EvalJob], metrics: list[str], ours: str = "ssvp") -> pd.DataFrame:
    """Per dataset and metric: `ours` against the other method with the highest class mean, the difference with its
    paired-bootstrap 95% interval and two-sided p-value (same resampled images for both; metrics/bootstrap.py)."""
    rows = []
    for ds in dict.fromkeys(job.target for job in jobs):
        evs = {job.method: study.evaluation(job) for job in jobs if job.target == ds}
        if ours not in evs or len(evs) < 2:
            continue
        for metric in metrics:
            means = {m: ev.mean(metric) for m, ev in evs.items()}
            others = {m: v for m, v in means.items() if m != ours and not math.isnan(v)}
            if not others or math.isnan(means[ours]):
                continue
            best = max(others, key=others.get)
            a, b = resamples(evs[ours], metric), resamples(evs[best], metric)
            diff = a - b if a is not None and b is not None else None
            lo, hi = percentile_interval(diff) if diff is not None else (math.nan, math.nan)
            rows.append({"dataset": ds, "metric": metric, "method": ours, "value": 100 * means[ours],
                         "best_baseline": best, "baseline_value": 100 * means[best],
                         "difference": 100 * (means[ours] - means[best]), "diff_ci_low": lo, "diff_ci_high": hi,
                         "p_value": paired_p_value(a, b) if diff is not None else math.nan})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


PAIRED_COLUMNS = ["dataset", "metric", "method", "value", "best_baseline", "baseline_value", "difference", "diff_ci_low",
                  "diff_ci_high", "p_value"]


def published_numbers(study: Study, method: str, target: str) -> pd.DataFrame:
    """A method's own published numbers where SSVP's Table 1 has none (methods published after it), named as our
    method, for the variant the study builds: VisualAD's README for its CLIP or DINOv2 model, AnomalyVFM's per-backbone
    result files for `options.vfm`. Empty for other methods."""
    if method not in ("visualad", "anomalyvfm"):
        return reported("SSVP", "Table 1").iloc[0:0]
    options = method_spec(method).options_from(study.config(Model(method, target)).options)
    if method == "visualad":
        name = "visualad" if options.backbone == "clip" else f"visualad[{options.backbone}]"
        rows = pd.concat([reported("VisualAD", "README (image)", method=name),
                          reported("VisualAD", "README (pixel)", method=name)])
    else:
        rows = reported("AnomalyVFM", f"results ({options.vfm})", method=f"anomalyvfm[{options.vfm}]")
    return rows.assign(method=method)


def table1(study: Study, jobs: list[EvalJob]) -> pd.DataFrame:
    """SSVP's Table 1 layout. `trained_on` says what trained each model here and `paper_trained_on` what produced the
    number in the paper column (each method's own paper protocol; AnomalyVFM's published models trained on the
    authors' synthetic set): where they differ, the paper value is a reference and no delta is computed."""
    firsts = {job.method: job.target for job in reversed(jobs)}  # each method's first target decides its variant
    paper = pd.concat([reported("SSVP", "Table 1")] + [published_numbers(study, m, t) for m, t in firsts.items()])
    frame = comparison(study, jobs, IMAGE_METRICS + PIXEL_METRICS, paper)
    if not len(frame):
        return frame
    frame["paper_trained_on"] = [study.published_trained_on(m, d) for m, d in zip(frame.method, frame.paper_dataset)]
    frame.loc[frame.trained_on != frame.paper_trained_on, "delta"] = math.nan
    return frame


def table2(study: Study, jobs: list[EvalJob]) -> pd.DataFrame:
    """Per class of the target: image and pixel AUROC of every method, with per-class CIs."""
    paper = reported("SSVP", "Table 2")
    rows = []
    for job in jobs:
        ev = study.evaluation(job)
        m = ev.metrics
        paper_ds = study.paper_dataset(job.target)
        source = study.trained_on(job.method, job.target)
        for metric in ("image_auroc", "pixel_auroc"):
            for _, r in m[m.metric == metric].iterrows():
                # another dataset's class of the same name (a synthetic "capsule") is no reference: only the mean is
                comparable = paper_ds == job.target or r.cls == "mean"
                paper_value = _paper_value(paper, paper_ds, job.method, metric, r.cls) if comparable else math.nan
                rows.append(_row(job.target, r.cls, job.method, metric, r.value, paper_value,
                                 paper_ds, trained_on=source, **interval(ev, metric, r.cls)))
    return pd.DataFrame(rows)


def baseline_overrides(study: Study, dataset: str, baseline: str = "shared_schedule") -> tuple[str, ...]:
    """Overrides that give Table 3's row A (Bayes-PFL) the settings of rows B-E named by `baseline` (see
    BASELINE_SHARED_KEYS), read from SSVP's resolved config for the same study and dataset."""
    if baseline not in BASELINE_SHARED_KEYS:
        from ..errors import ConfigError

        raise ConfigError(f"table 3 baseline={baseline!r}: choose {', '.join(BASELINE_SHARED_KEYS)}")
    return study.shared_settings(ABLATION_REFERENCE, dataset, BASELINE_SHARED_KEYS[baseline])


def table3(study: Study, jobs: list[EvalJob]) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each ablation row's class-mean AUROCs."""
    paper = reported("SSVP", "Table 3")
    rows = []
    for row in dict.fromkeys(job.model.label for job in jobs):
        group = [job for job in jobs if job.model.label == row]
        method, extra = group[0].method, group[0].model.extra
        target = group[0].target
        for metric in ("image_auroc", "pixel_auroc"):
            values = [100 * study.evaluation(job).mean(metric) for job in group]
            p = paper[(paper.method == f"model-{row}") & (paper.metric == metric)]
            rows.append({"model": row, "method": method, "switches": " ".join(extra) or "(defaults)", "metric": metric,
                         "reproduced": float(np.mean(values)), "std": float(np.std(values)), "seeds": len(group),
                         "paper": float(p.value.iloc[0]), "paper_std": float(p["std"].iloc[0]),
                         "delta": float(np.mean(values)) - float(p.value.iloc[0]), "dataset": target,
                         "trained_on": study.trained_on(method, target)})
    return pd.DataFrame(rows)


def table4(study: Study, models: list[Model], tir_layers: str | int = "mean",
           t_static: str = "handcrafted") -> pd.DataFrame:
    """TIR-FG and SCD of the Identity baseline and of SSVP (Eqs. 23-24), beside the paper's, with the relative gain."""
    from .analysis import alignment

    paper = reported("SSVP", "Table 4")
    ours = {model.label: alignment(study, model, tir_layers=tir_layers, t_static=t_static) for model in models}
    rows = []
    for metric in ("tir_fg", "scd_normal", "scd_abnormal"):
        for method in ("baseline", "ssvp"):
            p = paper[(paper.method == method) & (paper.metric == metric)].value
            rows.append({"metric": metric, "method": method, "reproduced": ours[method][metric], "paper": float(p.iloc[0]),
                         "delta": ours[method][metric] - float(p.iloc[0])})
    frame = pd.DataFrame(rows)
    gains = []
    for metric in ("tir_fg", "scd_normal", "scd_abnormal"):
        sign = 1 if metric == "tir_fg" else -1  # TIR-FG should rise, SCD should fall

        def gain(column):
            b, s = (frame[(frame.metric == metric) & (frame.method == m)][column].item() for m in ("baseline", "ssvp"))
            return 100 * sign * (s - b) / abs(b) if b else math.nan

        gains.append({"metric": metric, "method": "relative gain %", "reproduced": gain("reproduced"), "paper": gain("paper"),
                      "delta": gain("reproduced") - gain("paper")})
    return pd.concat([frame, pd.DataFrame(gains)], ignore_index=True)


def ablation_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 3 as shown: one row per model (and its switches), per metric the reproduced mean, std, the paper's mean
    and std, and the delta."""
    shown = frame.pivot_table(index=["model", "switches"], columns="metric",
                              values=["reproduced", "std", "paper", "paper_std", "delta"], sort=False)
    return shown.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)


def alignment_note(tir_layers: str | int, t_static: str) -> str:
    static = ("the embedding of the handcrafted prompts 'a photo of a normal {class}.' / 'a photo of a damaged "
              "{class}.'" if t_static == "handcrafted" else "T_init, the learned prompts before VCPG")
    return ("TIR-FG (Eq. 23, higher is better) and SCD (Eq. 24, lower is better), raw values. Baseline (Identity) = "
            f"SSVP without HSVS, VCPG and VTAM; TIR-FG patch features: {tir_layers} of the tapped layers; t_static = "
            f"{static}.")


def table5(study: Study, jobs: list[EvalJob]) -> pd.DataFrame:
    paper = reported("SSVP", "Table 5")
    entries = {entry["label"]: entry for entry in study.section("table5", [])}
    rows = []
    for job in jobs:
        ev = study.evaluation(job)
        entry = entries.get(job.model.label, {})
        for metric in ("image_auroc", "pixel_auroc"):
            p = paper[(paper.method == f"ssvp[{entry.get('paper', job.model.label)}]") & (paper.metric == metric)].value
            rows.append(_row(job.target, "mean", job.model.label, metric, ev.mean(metric),
                             float(p.iloc[0]) if len(p) else math.nan, study.paper_dataset(job.target),
                             params_M=entry.get("params_M"), trained_on=study.trained_on("ssvp", job.target)))
    return pd.DataFrame(rows)


def sensitivity(study: Study, jobs: list[EvalJob]) -> pd.DataFrame:
    """Figures 7-8: I-AUROC, P-AUROC and PRO of SSVP as one option varies (labels `parameter=value`)."""
    rows = []
    for job in jobs:
        parameter, value = job.model.label.split("=", 1)
        ev = study.evaluation(job)
        for metric in ("image_auroc", "pixel_auroc", "pixel_aupro_legacy", "pixel_aupro"):
            rows.append({"parameter": parameter, "value": float(value), "metric": metric,
                         "reproduced": 100 * ev.mean(metric), "dataset": job.target, "method": job.method,
                         "trained_on": study.trained_on(job.method, job.target)})
    return pd.DataFrame(rows)


def vip2clip_table(study: Study, jobs: list[EvalJob], table: str = "Table 1") -> pd.DataFrame:
    """ViP2-CLIP's Tables 1-2: image (AUROC, AP, F1-max) and pixel (AUROC, PRO, F1-max)."""
    return comparison(study, jobs, VIP2CLIP_METRICS, reported("ViP2-CLIP", table))


def dapo_tables(study: Study, jobs: list[EvalJob]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """DAPO: binary detection / segmentation per dataset, multi-type segmentation per object, and per defect type."""
    binary, objects, types = [], [], []
    for job in jobs:
        ev = study.evaluation(job)
        for metric in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro_legacy", "pixel_aupro",
                       "pixel_f1_max"):
            binary.append({"dataset": job.target, "metric": metric, "reproduced": 100 * ev.mean(metric),
                           "method": job.method, "trained_on": study.trained_on(job.method, job.target)})
        mt = ev.extra["multitype"]
        objects.append(mt["objects"].assign(dataset=job.target))
        types.append(mt["types"].assign(dataset=job.target))
    return pd.DataFrame(binary), pd.concat(objects, ignore_index=True), pd.concat(types, ignore_index=True)


def protocol_note(frame: pd.DataFrame) -> str:
    """One sentence per table saying which auxiliary dataset's test split trained each method behind its numbers."""
    if "trained_on" not in frame or "method" not in frame:
        return ""
    parts = []
    for method, group in frame.groupby("method", sort=False):
        pairs = dict.fromkeys(zip(group["dataset"], group["trained_on"])) if "dataset" in group else {}
        by_source: dict[str, list[str]] = {}
        for target, source in pairs:
            by_source.setdefault(source, []).append(target)
        parts.append(f"{method}: " + "; ".join(f"{', '.join(t)} <- {s}" for s, t in by_source.items()))
    return "Trained on (the auxiliary dataset's test split; target <- source): " + " | ".join(parts) + "."


def wide(frame: pd.DataFrame, index: list[str], metrics: list[str] | None = None,
         columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Pivot to one row per `index`, and per metric the reproduced value, its 95% CI (when the frame has one), the
    paper's value and the delta. A paper value from another dataset is labelled as a reference and has no delta."""
    frame = frame if metrics is None else frame[frame.metric.isin(metrics)]
    frame = frame.copy()
    if columns is None:
        columns = display_columns(frame)
    if CI in columns:
        frame[CI] = [format_ci(lo, hi) for lo, hi in zip(frame.ci_low, frame.ci_high)]
    ref = paper_reference_label(frame)
    if ref and "paper" in columns:
        frame[ref] = frame["paper"]
        columns = tuple(ref if c == "paper" else c for c in columns if c != "delta")
    out = frame.pivot_table(index=index, columns="metric", values=list(columns), sort=False, dropna=False,
                            aggfunc="first")
    if len(index) > 1:  # only the index combinations the frame holds, not their product (dropna=False makes it)
        out = out.reindex(pd.MultiIndex.from_frame(frame[index].drop_duplicates()))
    out = out.swaplevel(0, 1, axis=1)
    order = metrics or list(dict.fromkeys(frame.metric))
    return out.reindex(columns=[(m, c) for m in order for c in columns if (m, c) in out.columns])


def display_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    cols = ["reproduced"]
    if "ci_low" in frame and frame.ci_low.notna().any():
        cols.append(CI)
    if "paper" in frame:
        cols.append("paper")
        if "delta" in frame and not paper_reference_label(frame):
            cols.append("delta")
    return tuple(cols)


def paper_reference_label(frame: pd.DataFrame) -> str | None:
    """'paper: <dataset> (reference)' when the paper values stand beside another dataset than ours."""
    if "paper_dataset" not in frame or "dataset" not in frame:
        return None
    other = sorted({p for d, p in zip(frame.dataset, frame.paper_dataset) if p != d})
    return f"paper, {', '.join(_title(p) for p in other)} (reference)" if other else None


def _title(dataset: str) -> str:
    from ..data.registry import BENCHMARKS

    return BENCHMARKS[dataset].title if dataset in BENCHMARKS else dataset


def format_ci(lo: float, hi: float) -> str:
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "—"
    return f"[{lo:.2f}, {hi:.2f}]"
