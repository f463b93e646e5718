"""Tables of the paper, rebuilt from cached experiments, with the paper's own numbers and the deltas beside ours.

Every builder returns a long DataFrame (dataset, cls, method, metric, reproduced, paper, delta) in percent; `wide`
pivots it for display. Reproduced metrics come from `reports.experiments`; paper numbers from `reports.reported`.
Our `pixel_aupro_legacy` (cflow-ad 200 thresholds) is the one compared with the papers' "PRO"; the exact MVTec
AUPRO is shown next to it without a paper value.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import experiments
from .reported import reported

TABLE1_METHODS = ["winclip", "aprilgan", "anomalyclip", "adaclip", "bayes_pfl", "ssvp"]
TABLE2_METHODS = ["winclip", "anomalyclip", "adaclip", "bayes_pfl", "ssvp"]
IMAGE_METRICS = ["image_auroc", "image_f1_max", "image_ap"]
PIXEL_METRICS = ["pixel_auroc", "pixel_aupro_legacy", "pixel_ap", "pixel_aupro"]
PAPER_METRIC = {"pixel_aupro_legacy": "pixel_aupro", "pixel_aupro": None}  # ours -> the paper's column
# Table 3 of SSVP: the baseline (A) is Bayes-PFL re-run; B-E switch SSVP's components on one by one
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


def _row(dataset, cls, method, metric, ours: float, paper_value: float, **extra) -> dict:
    reproduced = 100 * ours if not math.isnan(ours) else math.nan
    delta = reproduced - paper_value if not (math.isnan(reproduced) or math.isnan(paper_value)) else math.nan
    return {"dataset": dataset, "cls": cls, "method": method, "metric": metric, "reproduced": reproduced,
            "paper": paper_value, "delta": delta, **extra}


def comparison(profile: str, datasets: list[str], methods: list[str], metrics: list[str], paper: pd.DataFrame,
               overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    """Dataset-mean metrics of every (dataset, method) beside the paper's numbers (the layout of both papers' Table 1)."""
    rows = []
    for ds in datasets:
        for method in methods:
            ev = experiments.evaluation(profile, method, ds, overrides)
            source = experiments.trained_on(profile, method, ds)
            for metric in metrics:
                rows.append(_row(ds, "mean", method, metric, ev.mean(metric),
                                 _paper_value(paper, experiments.paper_dataset(profile, ds), method, metric), trained_on=source))
    return pd.DataFrame(rows)


def table1(profile: str, datasets: list[str] | None = None, methods: list[str] | None = None,
           overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    return comparison(profile, datasets or experiments.targets(profile), methods or TABLE1_METHODS,
                      IMAGE_METRICS + PIXEL_METRICS, reported("SSVP", "Table 1"), overrides)


def table2(profile: str, dataset: str = "mvtec", methods: list[str] | None = None, overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    methods = methods or TABLE2_METHODS
    paper = reported("SSVP", "Table 2")
    paper_ds = experiments.paper_dataset(profile, dataset)
    rows = []
    for method in methods:
        m = experiments.evaluation(profile, method, dataset, overrides).metrics
        source = experiments.trained_on(profile, method, dataset)
        for metric in ("image_auroc", "pixel_auroc"):
            for _, r in m[m.metric == metric].iterrows():
                rows.append(_row(dataset, r.cls, method, metric, r.value, _paper_value(paper, paper_ds, method, metric, r.cls),
                                 trained_on=source))
    return pd.DataFrame(rows)


def table3(profile: str, dataset: str = "mvtec", seeds: list[int] | None = None, overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    seeds = seeds or [111, 222, 333]
    paper = reported("SSVP", "Table 3")
    rows = []
    for model, (method, extra) in ABLATION.items():
        for metric in ("image_auroc", "pixel_auroc"):
            values = [100 * experiments.evaluation(profile, method, dataset, tuple(extra) + tuple(overrides), seed).mean(metric)
                      for seed in seeds]
            p = paper[(paper.method == f"model-{model}") & (paper.metric == metric)]
            rows.append({"model": model, "method": method, "switches": " ".join(extra) or "(defaults)", "metric": metric,
                         "reproduced": float(np.mean(values)), "std": float(np.std(values)), "seeds": len(seeds),
                         "paper": float(p.value.iloc[0]), "paper_std": float(p["std"].iloc[0]),
                         "delta": float(np.mean(values)) - float(p.value.iloc[0]), "dataset": dataset,
                         "trained_on": experiments.trained_on(profile, method, dataset)})
    return pd.DataFrame(rows)


def table4(profile: str, dataset: str = "mvtec", overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    from .analysis import alignment

    paper = reported("SSVP", "Table 4")
    ours = {"baseline": alignment(profile, dataset, IDENTITY_BASELINE + tuple(overrides)),
            "ssvp": alignment(profile, dataset, tuple(overrides))}
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


def table5(profile: str, dataset: str = "mvtec", overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    paper = reported("SSVP", "Table 5")
    rows = []
    for entry in experiments.section(profile, "table5", []):
        ev = experiments.evaluation(profile, "ssvp", dataset, tuple(entry.get("overrides", [])) + tuple(overrides))
        label = entry["label"]
        for metric in ("image_auroc", "pixel_auroc"):
            p = paper[(paper.method == f"ssvp[{entry.get('paper', label)}]") & (paper.metric == metric)].value
            rows.append(_row(dataset, "mean", label, metric, ev.mean(metric), float(p.iloc[0]) if len(p) else math.nan,
                             params_M=entry.get("params_M"), trained_on=experiments.trained_on(profile, "ssvp", dataset)))
    return pd.DataFrame(rows)


def sensitivity(profile: str, parameter: str, values: list[float], dataset: str = "mvtec",
                overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    """Figures 7-8: I-AUROC, P-AUROC and PRO of SSVP as one option varies (step-wise coordinate search)."""
    rows = []
    for v in values:
        ev = experiments.evaluation(profile, "ssvp", dataset, (f"options.{parameter}={v}",) + tuple(overrides))
        for metric in ("image_auroc", "pixel_auroc", "pixel_aupro_legacy", "pixel_aupro"):
            rows.append({"parameter": parameter, "value": v, "metric": metric, "reproduced": 100 * ev.mean(metric),
                         "dataset": dataset, "method": "ssvp", "trained_on": experiments.trained_on(profile, "ssvp", dataset)})
    return pd.DataFrame(rows)


def vip2clip_table(profile: str, datasets: list[str] | None = None, methods: list[str] | None = None,
                   overrides: tuple[str, ...] = (), table: str = "Table 1") -> pd.DataFrame:
    """ViP2-CLIP's Tables 1-2: image (AUROC, AP, F1-max) and pixel (AUROC, PRO, F1-max)."""
    metrics = ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro_legacy", "pixel_f1_max"]
    return comparison(profile, datasets or experiments.section(profile, "vip2clip_datasets", experiments.targets(profile)),
                      methods or ["winclip", "aprilgan", "anomalyclip", "adaclip", "vip2clip"], metrics,
                      reported("ViP2-CLIP", table), overrides)


def dapo_tables(profile: str, datasets: list[str] | None = None, overrides: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """DAPO: binary detection / segmentation per dataset, multi-type segmentation per object, and per defect type."""
    datasets = datasets or experiments.section(profile, "dapo_datasets", experiments.targets(profile))
    binary, objects, types = [], [], []
    for ds in datasets:
        ev = experiments.evaluation(profile, "dapo", ds, overrides, multitype=True)
        for metric in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro_legacy", "pixel_aupro", "pixel_f1_max"):
            binary.append({"dataset": ds, "metric": metric, "reproduced": 100 * ev.mean(metric), "method": "dapo",
                           "trained_on": experiments.trained_on(profile, "dapo", ds)})
        mt = ev.extra["multitype"]
        objects.append(mt["objects"].assign(dataset=ds))
        types.append(mt["types"].assign(dataset=ds))
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


def wide(frame: pd.DataFrame, index: list[str], metrics: list[str] | None = None, columns: tuple[str, ...] = ("reproduced", "paper", "delta")) -> pd.DataFrame:
    """Pivot to one row per `index`, and per metric the reproduced / paper / delta columns."""
    frame = frame if metrics is None else frame[frame.metric.isin(metrics)]
    out = frame.pivot_table(index=index, columns="metric", values=list(columns), sort=False, dropna=False)
    out = out.swaplevel(0, 1, axis=1)
    order = metrics or list(dict.fromkeys(frame.metric))
    return out.reindex(columns=[(m, c) for m in order for c in columns if (m, c) in out.columns])
