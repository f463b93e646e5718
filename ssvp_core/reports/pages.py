"""One function per notebook: each computes its tables / figures through `experiments`, `tables`, `figures`,
saves them under `out_dir` (CSV + Markdown + HTML fragment per table, PNG per figure, and a manifest.json the
report site reads) and displays them. The notebooks only call these, with their papermill parameters.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from .. import io
from . import SMOKE_BANNER
from . import experiments, figures, tables

STYLE = "border-collapse:collapse;font-size:12px"


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

    def note(self, text: str) -> None:
        from IPython.display import Markdown

        self.manifest["notes"].append(text)
        self._write_manifest()
        _display(Markdown(text))

    def table(self, name: str, title: str, shown: pd.DataFrame, data: pd.DataFrame | None = None) -> pd.DataFrame:
        from IPython.display import HTML

        data = shown if data is None else data
        io.write_text(self.out / f"{name}.csv", data.to_csv(index=False))
        io.write_text(self.out / f"{name}.md", f"### {title}\n\n" + _flat(shown).to_markdown(floatfmt=".2f") + "\n")
        html = shown.to_html(float_format=lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}",
                             border=1, na_rep="")
        io.write_text(self.out / f"{name}.html", html.replace('<table border="1"', f'<table border="1" style="{STYLE}"'))
        self.manifest["tables"].append({"name": name, "title": title, "html": f"{name}.html", "csv": f"{name}.csv"})
        self._write_manifest()
        _display(HTML(f"<h4>{title}</h4>"))
        _display(shown)
        return shown

    def figure(self, name: str, title: str, fig) -> None:
        io.save_figure(fig, self.out / f"{name}.png", dpi=110, bbox_inches="tight")
        self.manifest["figures"].append({"name": name, "title": title, "png": f"{name}.png"})
        self._write_manifest()
        _display(fig)
        figures.close(fig)


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


def table1(profile="smoke", out_dir="reports/smoke/table1", datasets=None, methods=None, overrides=(), device="auto"):
    page = Page("table1", profile, out_dir, overrides, device)
    frame = tables.table1(profile, _datasets(profile, datasets, "table1_datasets"), methods, page.overrides)
    _protocol_note(page, frame)
    page.note("Image level: (AUROC, F1-max, AP); pixel level: (AUROC, PRO, AP). Reproduced and paper values in %, "
              "delta = reproduced - paper. PRO = cflow-ad 200-threshold AUPRO as in the papers; `pixel_aupro` is the "
              "exact MVTec AUPRO (no paper value). Paper: SSVP v2 Table 1.")
    _image_and_pixel(page, "table1", "Table 1", frame, tables.IMAGE_METRICS, tables.PIXEL_METRICS)
    return frame


def table2(profile="smoke", out_dir="reports/smoke/table2", dataset=None, methods=None, overrides=(), device="auto"):
    page = Page("table2", profile, out_dir, overrides, device)
    frame = tables.table2(profile, dataset or _main_target(profile), methods, page.overrides)
    _protocol_note(page, frame)
    page.table("table2", "Table 2: class-wise image-level (IL) and pixel-level (PL) AUROC",
               tables.wide(frame, ["cls", "method"], ["image_auroc", "pixel_auroc"]), frame)
    return frame


def table3(profile="smoke", out_dir="reports/smoke/table3", dataset=None, seeds=None, overrides=(), device="auto"):
    page = Page("table3", profile, out_dir, overrides, device)
    seeds = list(seeds or experiments.section(profile, "ablation_seeds", [111, 222, 333]))
    frame = tables.table3(profile, dataset or _main_target(profile), seeds, page.overrides)
    _protocol_note(page, frame)
    page.note(f"Mean ± std over seeds {seeds}. A = Bayes-PFL (the paper's re-run baseline); B-E = SSVP with the "
              "listed switches (B: naive concat fusion; C: ATF; D: + VCPG; E: full).")
    shown = frame.pivot_table(index=["model", "switches"], columns="metric", values=["reproduced", "std", "paper", "paper_std", "delta"], sort=False)
    shown = shown.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    page.table("table3", "Table 3: component ablation", shown, frame)
    return frame


def table4(profile="smoke", out_dir="reports/smoke/table4", dataset=None, overrides=(), device="auto"):
    page = Page("table4", profile, out_dir, overrides, device)
    target = dataset or _main_target(profile)
    frame = tables.table4(profile, target, page.overrides)
    _trained_note(page, profile, ["ssvp"], [target])
    page.note("TIR-FG (Eq. 23, higher is better) and SCD (Eq. 24, lower is better), raw values. Baseline (Identity) = "
              "SSVP without HSVS, VCPG and VTAM; t_static = the handcrafted prompt 'a photo of a normal/damaged <class>.'")
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


def efficiency(profile="smoke", out_dir="reports/smoke/efficiency", methods=None, overrides=(), device="cpu"):
    from .efficiency import measure

    page = Page("efficiency", profile, out_dir, overrides, "auto")
    methods = list(methods or ["winclip", "aprilgan", "anomalyclip", "adaclip", "bayes_pfl", "vip2clip", "dapo", "ssvp"])
    frame = measure(profile, methods, "cuda" if device == "auto" and _cuda() else (device if device != "auto" else "cpu"),
                    repeats=experiments.section(profile, "efficiency_repeats", 3), overrides=list(overrides))
    page.note("Not in the paper. One image per forward pass; GFLOPs count matrix products and convolutions "
              "(torch.utils.flop_counter); peak memory is the process's peak RSS on CPU or peak allocated memory on GPU.")
    page.table("efficiency", "Efficiency per method", frame.set_index("method"), frame)
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


PAGES = {f.__name__: f for f in (table1, table2, table3, table4, table5, qualitative, tsne, sensitivity, efficiency, vip2clip, dapo)}


def load_manifest(folder: Path) -> dict | None:
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None
