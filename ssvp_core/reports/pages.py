"""One function per notebook: each computes its tables / figures through `experiments`, `tables`, `figures`,
saves them under `out_dir` (CSV + Markdown + HTML fragment per table, PNG per figure, and a manifest.json the
report site reads) and displays them. The notebooks only call these, with their papermill parameters.

What a reader sees is kept clean: every number is shown with 2 decimals (NaN as "—"; the CSVs keep full
precision), warnings and log records raised while a page is computed go to `<out_dir>/warnings.log` (the page
says how many) instead of red boxes in the notebook, and where the paper's numbers belong to another dataset
(smoke) they are a labelled reference column without a delta.
"""
from __future__ import annotations

import html as _html
import json
import logging
import math
import os
import warnings
from pathlib import Path

import pandas as pd

from .. import io
from . import SMOKE_BANNER
from . import experiments, figures, tables
from .efficiency import GPU_TABLE

STYLE = "border-collapse:collapse;font-size:12px"
MISSING = "—"


def format_number(value) -> str:
    """2 decimals; NaN/None as an em dash; integers and text unchanged."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:.2f}"
    return str(value)


def format_p(p: float) -> str:
    """A p-value with 2 decimals, and "< 0.01" below that (the smallest a bootstrap of B resamples gives is 2/(B+1))."""
    if p is None or math.isnan(p):
        return MISSING
    return "< 0.01" if p < 0.01 else f"{p:.2f}"


def table_html(frame: pd.DataFrame) -> str:
    """The HTML table of a page: 2-decimal numbers, em dash for missing values."""
    shown = frame.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(format_number)
        elif shown[col].dtype == object:
            shown[col] = shown[col].map(lambda v: format_number(v) if isinstance(v, float) or v is None else v)
    html = shown.to_html(border=1, na_rep=MISSING, escape=True)
    return html.replace('<table border="1"', f'<table border="1" style="{STYLE}"')


def _display(obj) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(obj)
    except ImportError:  # pragma: no cover - IPython comes with the notebook stack
        pass


class Page:
    """The output folder of one notebook and what it has written so far."""

    def __init__(self, name: str, profile: str, out_dir: str, overrides=(), device: str = "auto"):
        from IPython.display import Markdown

        self.name, self.profile = name, profile
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.overrides = tuple(overrides or ()) + ((f"device={device}",) if device and device != "auto" else ())
        self.manifest = {"name": name, "profile": profile, "tables": [], "figures": [], "notes": []}
        self._capture_warnings()
        threads = os.environ.get("SSVP_THREADS")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        experiments.ensure_profile_data(profile)
        banner = SMOKE_BANNER if profile == "smoke" else experiments.section(profile, "banner")
        if banner:
            self.manifest["notes"].append(banner)
            self.manifest["banner"] = banner
            _display(Markdown(f"**{banner}**"))
        self._write_manifest()

    def _write_manifest(self) -> None:
        io.write_json(self.out / "manifest.json", self.manifest)

    def _capture_warnings(self) -> None:
        """In a notebook kernel, warnings and WARNING+ log records go to warnings.log (counted in the manifest) and
        progress bars are off: the notebook output shows the tables and figures only. Elsewhere (a script, the
        tests) nothing is redirected."""
        self.warnings_log = self.out / "warnings.log"
        self.warnings_log.write_text("")
        self.manifest["warnings"] = 0
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython comes with the notebook stack
            return
        if get_ipython() is None:
            return
        os.environ["TQDM_DISABLE"] = "1"
        page = self

        def record(message, category, filename, lineno, file=None, line=None):
            page._log_warning(f"{category.__name__}: {message} ({Path(filename).name}:{lineno})")

        warnings.showwarning = record
        # tqdm.auto, imported by the hub libraries, looks for notebook widgets; progress bars are off here anyway
        warnings.filterwarnings("ignore", message="IProgress not found")

        class _Handler(logging.Handler):
            def emit(self, rec):
                page._log_warning(f"{rec.levelname} {rec.name}: {rec.getMessage()}")

        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(_Handler(level=logging.WARNING))

    def _log_warning(self, text: str) -> None:
        with self.warnings_log.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
        self.manifest["warnings"] = self.manifest.get("warnings", 0) + 1
        self._write_manifest()

    def note(self, text: str) -> None:
        from IPython.display import Markdown

        self.manifest["notes"].append(text)
        self._write_manifest()
        _display(Markdown(text))

    def table(self, name: str, title: str, shown: pd.DataFrame, data: pd.DataFrame | None = None) -> pd.DataFrame:
        from IPython.display import HTML

        data = shown if data is None else data
        shown = self._reference_columns(shown, data)
        io.write_text(self.out / f"{name}.csv", data.to_csv(index=False))
        io.write_text(self.out / f"{name}.md", f"### {title}\n\n"
                      + _flat(shown).to_markdown(floatfmt=".2f").replace(" nan ", f" {MISSING} ") + "\n")
        html = table_html(shown)
        # `<table>.table.html`: a table may share its page's name, whose `<page>.html` is the exported notebook
        io.write_text(self.out / f"{name}.table.html", html)
        self.manifest["tables"].append({"name": name, "title": title, "html": f"{name}.table.html", "csv": f"{name}.csv"})
        self._write_manifest()
        _display(HTML(f"<h4>{_html.escape(title)}</h4>{html}"))
        return shown

    def _reference_columns(self, shown: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
        """Tables without a dataset column (ablations, alignment) in a profile whose paper numbers stand beside
        another dataset: drop the deltas and label the paper columns as a reference."""
        alias = experiments.section(self.profile, "paper_alias") or {}
        if not alias or "dataset" in data.columns:
            return shown
        label = f"paper, {', '.join(tables._title(a) for a in sorted(set(alias.values())))} (reference)"

        def rename(col):
            return label if col == "paper" else (f"{label}, std" if col == "paper_std" else col)

        if isinstance(shown.columns, pd.MultiIndex):
            keep = [c for c in shown.columns if "delta" not in c]
            shown = shown[keep]
            shown.columns = pd.MultiIndex.from_tuples([tuple(rename(x) for x in c) for c in shown.columns])
        else:
            shown = shown[[c for c in shown.columns if c != "delta"]].rename(columns=rename)
        return shown

    def figure(self, name: str, title: str, fig) -> None:
        io.save_figure(fig, self.out / f"{name}.png", dpi=110, bbox_inches="tight")
        self.manifest["figures"].append({"name": name, "title": title, "png": f"{name}.png"})
        self._write_manifest()
        _display(fig)
        figures.close(fig)

    def summary(self, fragment: str) -> None:
        """An HTML fragment the report index shows at its top (Table 1's overview)."""
        io.write_text(self.out / "summary.html", fragment)
        self.manifest["summary"] = "summary.html"
        self._write_manifest()


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """Single-level column and index labels for Markdown."""
    out = frame.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(c) for c in col) for col in out.columns]
    if isinstance(out.index, pd.MultiIndex):
        out.index = [" / ".join(str(c) for c in idx) for idx in out.index]
    return out


def _datasets(profile: str, given, default_key: str | None = None) -> list[str]:
    if given:
        return list(given)
    if default_key:
        return list(experiments.section(profile, default_key, experiments.targets(profile)))
    return experiments.targets(profile)


def _main_target(profile: str) -> str:
    """The dataset of the single-dataset tables (MVTec-AD in the paper; the held-out synthetic set in smoke)."""
    return experiments.section(profile, "main_target", "mvtec")


def _protocol_note(page: Page, frame: pd.DataFrame) -> None:
    """Which auxiliary dataset trained each method behind the page's numbers (tables.protocol_note)."""
    text = tables.protocol_note(frame)
    if text:
        page.note(text)


def _trained_note(page: Page, profile: str, methods: list[str], targets: list[str]) -> None:
    """The protocol note for pages whose figures (not tables) come from trained models."""
    rows = [{"method": m, "dataset": t, "trained_on": experiments.trained_on(profile, m, t)} for m in methods for t in targets]
    _protocol_note(page, pd.DataFrame(rows))


def _image_and_pixel(page: Page, name: str, title: str, frame: pd.DataFrame, image_metrics, pixel_metrics) -> None:
    """Both papers split their Table 1 into an image-level and a pixel-level half, one row per (dataset, method)."""
    page.table(f"{name}_image", f"{title} (image level)", tables.wide(frame, ["dataset", "method"], list(image_metrics)), frame)
    page.table(f"{name}_pixel", f"{title} (pixel level)", tables.wide(frame, ["dataset", "method"], list(pixel_metrics)), frame)


def _interval_note(profile: str, overrides=()) -> str:
    cfg = experiments.run_config(profile, "reference", experiments.targets(profile)[0], tuple(overrides))
    return (f"95% CI: percentile bootstrap over test images ({cfg.eval.bootstrap} resamples, seed "
            f"{cfg.eval.bootstrap_seed}), stratified by class and label; each resample recomputes every class's metric "
            "on the drawn images (pixel metrics on all pixels of the drawn images) and averages over classes.")


def _reference_note(frame: pd.DataFrame) -> str | None:
    label = tables.paper_reference_label(frame)
    if not label:
        return None
    return (f"The column '{label}' holds the paper's published numbers for that dataset, for orientation only: the "
            "data here are another set, so no delta is computed.")


def table1(profile="smoke", out_dir="reports/smoke/table1", datasets=None, methods=None, overrides=(), device="auto"):
    page = Page("table1", profile, out_dir, overrides, device)
    datasets = _datasets(profile, datasets, "table1_datasets")
    frame = tables.table1(profile, datasets, methods, page.overrides)
    _protocol_note(page, frame)
    reference = _reference_note(frame)
    page.note("Image level: (AUROC, F1-max, AP); pixel level: (AUROC, PRO, AP). Reproduced and paper values in %"
              + ("" if reference else ", delta = reproduced - paper") + ". PRO = cflow-ad 200-threshold AUPRO as in "
              "the papers; `pixel_aupro` is the exact MVTec AUPRO (no paper value). Paper: SSVP v2 Table 1.")
    page.note(_interval_note(profile, page.overrides))
    if reference:
        page.note(reference)
    _image_and_pixel(page, "table1", "Table 1", frame, tables.IMAGE_METRICS, tables.PIXEL_METRICS)
    used = list(dict.fromkeys(frame.method))
    test = tables.versus_best_baseline(profile, datasets, used, ["image_auroc", "pixel_auroc", "pixel_aupro_legacy"],
                                       page.overrides)
    if len(test):
        page.note("SSVP against the best other method per dataset and metric: difference of class means with its "
                  "paired-bootstrap 95% CI (the same resampled images for both methods) and two-sided p-value "
                  "2·min(#{d≤0}+1, #{d≥0}+1)/(B+1).")
        shown = test.assign(**{tables.CI: [tables.format_ci(lo, hi) for lo, hi in zip(test.diff_ci_low, test.diff_ci_high)],
                               "p": test.p_value.map(format_p)})
        page.table("table1_test", "SSVP vs the best baseline (paired bootstrap)",
                   shown.set_index(["dataset", "metric"])[["value", "best_baseline", "baseline_value", "difference", tables.CI, "p"]],
                   test)
    ref_label = tables.paper_reference_label(frame)
    page.figure("table1_bars", "Table 1: reproduced vs paper", figures.comparison_bars(
        frame, ["image_auroc", "image_f1_max", "image_ap", "pixel_auroc", "pixel_aupro_legacy", "pixel_ap"], ref_label))
    page.summary(summary_fragment(frame, test))
    return frame


def summary_fragment(frame: pd.DataFrame, test: pd.DataFrame | None = None,
                     metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc", "pixel_aupro_legacy")) -> str:
    """Per dataset: each method's reproduced class mean (95% CI) beside the paper's, the best reproduced value of
    each metric in bold with a star; then SSVP against the best other method."""
    ref = tables.paper_reference_label(frame)
    paper_head = "paper (reference)" if ref else "paper"
    parts = []
    for ds in dict.fromkeys(frame.dataset):
        sub = frame[(frame.dataset == ds) & frame.metric.isin(metrics)]
        present = [m for m in metrics if m in set(sub.metric)]
        head = "".join(f"<th>{figures.METRIC_LABELS.get(m, m)}</th><th>{paper_head}</th>" for m in present)
        rows = []
        best = {m: sub[sub.metric == m].reproduced.max() for m in present}
        for method in dict.fromkeys(sub.method):
            cells = []
            for m in present:
                r = sub[(sub.method == method) & (sub.metric == m)].iloc[0]
                value = format_number(r.reproduced)
                if not math.isnan(r.reproduced) and r.reproduced == best[m]:
                    value = f"<b>★ {value}</b>"
                ci = "" if math.isnan(r.get("ci_low", math.nan)) else f" <small>{tables.format_ci(r.ci_low, r.ci_high)}</small>"
                cells.append(f"<td>{value}{ci}</td><td>{format_number(r.paper)}</td>")
            rows.append(f"<tr><td>{_html.escape(method)}</td>{''.join(cells)}</tr>")
        title = f"{_html.escape(ds)}" + (f" (paper values: {_html.escape(tables._title(sub.paper_dataset.iloc[0]))}, "
                                         "for reference only)" if ref else "")
        parts.append(f"<h3>{title}</h3><table border='1' style='{STYLE}'><tr><th>method</th>{head}</tr>{''.join(rows)}</table>")
        if test is not None and len(test):
            lines = []
            for _, t in test[test.dataset == ds].iterrows():
                lines.append(f"{figures.METRIC_LABELS.get(t.metric, t.metric)}: SSVP {t.value:.2f} vs {_html.escape(t.best_baseline)} "
                             f"{t.baseline_value:.2f}, difference {t.difference:+.2f} "
                             f"(95% CI {tables.format_ci(t.diff_ci_low, t.diff_ci_high)}), "
                             f"p {format_p(t.p_value) if format_p(t.p_value).startswith('<') else '= ' + format_p(t.p_value)}")
            if lines:
                parts.append("<p>SSVP vs the best other method (paired bootstrap): " + "; ".join(lines) + ".</p>")
    parts.append("<p><small>Class means in %, ★ = best reproduced value of the column; in brackets the 95% bootstrap "
                 "CI.</small></p>")
    return "\n".join(parts)


def table2(profile="smoke", out_dir="reports/smoke/table2", dataset=None, methods=None, overrides=(), device="auto"):
    page = Page("table2", profile, out_dir, overrides, device)
    frame = tables.table2(profile, dataset or _main_target(profile), methods, page.overrides)
    _protocol_note(page, frame)
    page.note(_interval_note(profile, page.overrides).replace("averages over classes",
                                                              "for a class row, the metric of that class"))
    reference = _reference_note(frame)
    if reference:
        page.note(reference)
    page.table("table2", "Table 2: class-wise image-level (IL) and pixel-level (PL) AUROC",
               tables.wide(frame, ["cls", "method"], ["image_auroc", "pixel_auroc"]), frame)
    page.figure("table2_bars", "Table 2: per-class AUROC", figures.per_class_bars(
        frame[frame.cls != "mean"], reference=tables.paper_reference_label(frame)))
    return frame


def table3(profile="smoke", out_dir="reports/smoke/table3", dataset=None, seeds=None, baseline="shared_schedule",
           overrides=(), device="auto"):
    """baseline: what row A (Bayes-PFL) shares with rows B-E, tables.BASELINE_SHARED_KEYS: shared_schedule |
    shared_schedule_and_backbone | released (Bayes-PFL's own 30 epochs, batch 32, sigma 8, ...)."""
    page = Page("table3", profile, out_dir, overrides, device)
    seeds = list(seeds or experiments.section(profile, "ablation_seeds", [111, 222, 333]))
    target = dataset or _main_target(profile)
    frame = tables.table3(profile, target, seeds, page.overrides, baseline)
    _protocol_note(page, frame)
    shared = tables.baseline_overrides(profile, target, baseline, page.overrides)
    page.note(f"Mean ± std over seeds {seeds}. A = Bayes-PFL (the paper's re-run baseline); B-E = SSVP with the "
              "listed switches (B: naive concat fusion; C: ATF; D: + VCPG; E: full). Row A shares with B-E "
              f"(`baseline={baseline}`): {', '.join(shared) or 'nothing (Bayes-PFL as released)'}; the paper: "
              "\"all models employ the same training configuration parameters, with the epoch set to 15 and the batch "
              "size set to 8\".")
    shown = frame.pivot_table(index=["model", "switches"], columns="metric", values=["reproduced", "std", "paper", "paper_std", "delta"], sort=False)
    shown = shown.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    page.table("table3", "Table 3: component ablation", shown, frame)
    return frame


def table4(profile="smoke", out_dir="reports/smoke/table4", dataset=None, tir_layers="mean", t_static="handcrafted",
           overrides=(), device="auto"):
    """tir_layers: Eq. 23's patch features, mean | last | a tapped-layer index; t_static: Eq. 24's static prototype,
    handcrafted | t_init (analysis module docstring)."""
    page = Page("table4", profile, out_dir, overrides, device)
    target = dataset or _main_target(profile)
    frame = tables.table4(profile, target, page.overrides, tir_layers, t_static)
    _trained_note(page, profile, ["ssvp"], [target])
    static = ("the handcrafted prompt 'a photo of a normal/damaged <class>.'" if t_static == "handcrafted"
              else "T_init, the learned prompts before VCPG")
    page.note("TIR-FG (Eq. 23, higher is better) and SCD (Eq. 24, lower is better), raw values. Baseline (Identity) = "
              f"SSVP without HSVS, VCPG and VTAM; TIR-FG patch features: {tir_layers} of the tapped layers; "
              f"t_static = {static}.")
    page.table("table4", "Table 4: semantic-visual alignment", frame.set_index(["metric", "method"]), frame)
    return frame


def table5(profile="smoke", out_dir="reports/smoke/table5", dataset=None, overrides=(), device="auto"):
    page = Page("table5", profile, out_dir, overrides, device)
    frame = tables.table5(profile, dataset or _main_target(profile), page.overrides)
    _protocol_note(page, frame)
    if profile == "smoke":
        page.note("Smoke: tiny random stand-ins of each auxiliary backbone family (same timm classes, small widths).")
    page.table("table5", "Table 5: auxiliary visual backbone", tables.wide(frame, ["method"], ["image_auroc", "pixel_auroc"]), frame)
    return frame


def qualitative(profile="smoke", out_dir="reports/smoke/qualitative", dataset=None, other_datasets=None, overrides=(), device="auto"):
    """Figures 3, 4 and 5."""
    page = Page("qualitative", profile, out_dir, overrides, device)
    target = dataset or _main_target(profile)
    fig3_classes = experiments.section(profile, "figure3_classes")
    picks = experiments.pick_samples(profile, target, 1, fig3_classes)
    outs = {m: experiments.sample_outputs(profile, m, target, picks, page.overrides) for m in ("adaclip", "bayes_pfl", "ssvp")}
    _trained_note(page, profile, list(outs), [target, *(other_datasets or experiments.section(profile, "figure5_datasets", []))])
    names = {"adaclip": "AdaCLIP", "bayes_pfl": "Bayes-PFL", "ssvp": "SSVP"}
    ref = outs["ssvp"]
    page.figure("figure3", "Figure 3: qualitative comparison",
                figures.qualitative_grid([o["sample"].cls for o in ref], [o["image"] for o in ref], [o["mask"] for o in ref],
                                         {names[m]: [o["map"] for o in v] for m, v in outs.items()}))
    page.figure("figure4", f"Figure 4: baseline vs SSVP on {target}",
                figures.baseline_vs_ssvp({"Baseline": outs["bayes_pfl"][:4], "SSVP": ref[:4]}))
    for ds in other_datasets or experiments.section(profile, "figure5_datasets", []):
        p = experiments.pick_samples(profile, ds, 1)[:4]
        samples = {"Baseline": experiments.sample_outputs(profile, "bayes_pfl", ds, p, page.overrides),
                   "SSVP": experiments.sample_outputs(profile, "ssvp", ds, p, page.overrides)}
        page.figure(f"figure5_{ds}", f"Figure 5: baseline vs SSVP on {ds}", figures.baseline_vs_ssvp(samples))


def tsne(profile="smoke", out_dir="reports/smoke/tsne", dataset=None, overrides=(), device="auto"):
    """Figure 6."""
    from .analysis import prompt_embeddings, tsne as run_tsne

    page = Page("tsne", profile, out_dir, overrides, device)
    target = dataset or experiments.section(profile, "figure6_dataset", "btad")
    _trained_note(page, profile, ["ssvp"], [target])
    panels = {}
    for label, extra in (("Baseline", tables.IDENTITY_BASELINE), ("SSVP", ())):
        vectors, labels = prompt_embeddings(profile, target, extra + page.overrides)
        panels[label] = (run_tsne(vectors), labels)
    page.figure("figure6", f"Figure 6: t-SNE of prompt embeddings on {target}", figures.tsne_panels(panels))


def sensitivity(profile="smoke", out_dir="reports/smoke/sensitivity", dataset=None, gammas=None, xis=None, overrides=(), device="auto"):
    """Figures 7-8."""
    page = Page("sensitivity", profile, out_dir, overrides, device)
    target = dataset or _main_target(profile)
    grid = experiments.section(profile, "sensitivity", {})
    gammas = list(gammas or grid.get("gamma", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    xis = list(xis or grid.get("xi", [0.70, 0.75, 0.80, 0.85, 0.90, 0.95]))
    g = tables.sensitivity(profile, "gamma", gammas, target, page.overrides)
    x = tables.sensitivity(profile, "xi", xis, target, page.overrides)
    _protocol_note(page, g)
    page.table("figure7_data", "Figure 7 data (gamma)", g.pivot_table(index="value", columns="metric", values="reproduced"), g)
    page.table("figure8_data", "Figure 8 data (xi)", x.pivot_table(index="value", columns="metric", values="reproduced"), x)
    page.figure("figure7", "Figure 7: sensitivity to the balance factor gamma (paper peak 0.5)", figures.sensitivity_plot(g, "gamma", "γ", 0.5))
    page.figure("figure8", "Figure 8: sensitivity to the margin xi (paper peak 0.85)", figures.sensitivity_plot(x, "xi", "ξ", 0.85))


def efficiency(profile="smoke", out_dir="reports/smoke/efficiency", methods=None, gpu_table=None, overrides=(),
               device="cpu"):
    from .efficiency import measure, read_gpu_table

    page = Page("efficiency", profile, out_dir, overrides, "auto")
    methods = list(methods or ["winclip", "aprilgan", "anomalyclip", "adaclip", "bayes_pfl", "vip2clip", "dapo", "ssvp"])
    frame = measure(profile, methods, "cuda" if device == "auto" and _cuda() else (device if device != "auto" else "cpu"),
                    repeats=experiments.section(profile, "efficiency_repeats", 3), overrides=list(overrides))
    page.note("Not in the paper. One image per forward pass; GFLOPs count matrix products and convolutions "
              "(torch.utils.flop_counter); peak memory is the process's peak RSS on CPU or peak allocated memory on GPU.")
    page.table("efficiency", "Efficiency per method", frame.set_index("method"), frame)
    gpu_table = gpu_table or GPU_TABLE
    measured = read_gpu_table(gpu_table)
    if measured is None:
        page.note(f"No GPU measurement in {gpu_table}: on a CUDA machine, `python bench/gpu.py --out {gpu_table}` "
                  "measures every method at paper settings and this page shows its table.")
    else:
        gpu_device, gpu = measured
        page.table("gpu", f"GPU, paper settings ({gpu_device}; bench/gpu.py, {gpu_table})", gpu.set_index(gpu.columns[0]),
                   gpu)
    return frame


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def vip2clip(profile="smoke", out_dir="reports/smoke/vip2clip", datasets=None, methods=None, overrides=(), device="auto"):
    page = Page("vip2clip", profile, out_dir, overrides, device)
    frame = tables.vip2clip_table(profile, _datasets(profile, datasets, "vip2clip_datasets"), methods, page.overrides)
    _protocol_note(page, frame)
    page.note("ViP2-CLIP's Table 1 layout: image (AUROC, AP, F1-max), pixel (AUROC, PRO, F1-max). Paper values from the "
              "ViP2-CLIP README tables; its medical Table 2 needs datasets with a meta.json (reader `meta`), listed in "
              "the paper preset's `vip2clip_medical` when present.")
    page.note(_interval_note(profile, page.overrides))
    reference = _reference_note(frame)
    if reference:
        page.note(reference)
    _image_and_pixel(page, "vip2clip", "ViP2-CLIP Table 1", frame, ["image_auroc", "image_ap", "image_f1_max"],
                     ["pixel_auroc", "pixel_aupro_legacy", "pixel_f1_max"])
    medical = experiments.section(profile, "vip2clip_medical", [])
    present = [ds for ds in medical if Path(experiments.dataset_root(profile, ds)).exists()]
    if len(present) < len(medical):
        page.note("Medical sets not on disk, left out of Table 2: "
                  + ", ".join(f"{ds} ({experiments.dataset_root(profile, ds)})" for ds in medical if ds not in present) + ".")
    if present:
        med = tables.vip2clip_table(profile, present, methods, page.overrides, table="Table 2")
        _protocol_note(page, med)
        page.table("vip2clip_medical", "ViP2-CLIP Table 2 (medical)", tables.wide(med, ["dataset", "method"]), med)
    return frame


def dapo(profile="smoke", out_dir="reports/smoke/dapo", datasets=None, overrides=(), device="auto"):
    from .reported import reported

    page = Page("dapo", profile, out_dir, overrides, device)
    binary, objects, types = tables.dapo_tables(profile, _datasets(profile, datasets, "dapo_datasets"), page.overrides)
    _protocol_note(page, binary)
    claims = reported("DAPO")
    page.note("DAPO's result tables could not be retrieved; its abstract claims are listed below. Multi-type "
              "segmentation: per object, macro one-vs-rest pixel AUROC / AP and argmax F1 over normal + that object's "
              "defect types, then the mean over objects.")
    page.table("dapo_binary", "DAPO: binary detection and segmentation (%)", binary.pivot_table(index="dataset", columns="metric", values="reproduced"), binary)
    page.table("dapo_multitype", "DAPO: multi-type segmentation per object", objects.set_index(["dataset", "cls"]), objects)
    page.table("dapo_types", "DAPO: multi-type segmentation per defect type", types.set_index(["dataset", "defect"]), types)
    page.table("dapo_claims", "DAPO: reported claims (abstracts)", claims[["table", "metric", "value", "source"]].set_index("table"), claims)
    return binary


# files a page reads besides the package and the run caches: a change re-runs its notebook (runner.notebook_key)
PAGE_INPUTS = {"efficiency": (GPU_TABLE,)}
PAGES = {f.__name__: f for f in (table1, table2, table3, table4, table5, qualitative, tsne, sensitivity, efficiency, vip2clip, dapo)}


def load_manifest(folder: Path) -> dict | None:
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None
