"""Figures of the paper (matplotlib / seaborn), drawn from `Study.sample_outputs` and the table builders."""
from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colormaps
from scipy import ndimage

from ..metrics import pixel_metrics


def _normalise(m: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((m - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(m)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (1 - alpha) * image + alpha * colormaps["jet"](heat)[..., :3]


def qualitative_grid(columns: list[str], images: list[np.ndarray], masks: list[np.ndarray],
                     maps: dict[str, list[np.ndarray]], title: str = "") -> plt.Figure:
    """Figure 3: rows input, ground truth, then one row per method; one column per sample (class)."""
    rows = 2 + len(maps)
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.8 * len(columns), 1.8 * rows), squeeze=False)
    for j, col in enumerate(columns):
        axes[0, j].imshow(images[j])
        axes[0, j].set_title(col, fontsize=8)
        axes[1, j].imshow(masks[j], cmap="gray")
        for i, (method, method_maps) in enumerate(maps.items()):
            m = method_maps[j]
            axes[2 + i, j].imshow(heat_overlay(images[j], _normalise(m, m.min(), m.max())))
    for i, name in enumerate(["Input", "GT", *maps]):
        axes[i, 0].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def best_f1_threshold(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    m = pixel_metrics(np.stack(maps).astype(np.float32), np.stack(masks), aupro=())
    return m["f1_threshold"]


def four_panels(axes, image: np.ndarray, amap: np.ndarray, mask: np.ndarray, threshold: float, lo: float, hi: float) -> None:
    """Figures 4-5, one sample: (a) input, (b) score map, (c) map above the best-F1 threshold with the GT contour
    in green, (d) GT in red (Bayes-PFL's visualisation layout)."""
    heat = _normalise(amap, lo, hi)
    axes[0].imshow(image)
    axes[1].imshow(heat_overlay(image, heat))
    kept = heat_overlay(image, heat * (amap >= threshold))
    axes[2].imshow(kept)
    edge = mask & ~ndimage.binary_erosion(mask, iterations=1)
    axes[2].contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
    red = image.copy()
    red[mask] = 0.5 * red[mask] + 0.5 * np.array([1.0, 0.0, 0.0])
    red[edge] = [1.0, 0.0, 0.0]
    axes[3].imshow(red)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def baseline_vs_ssvp(samples: dict[str, list[dict]], title: str = "") -> plt.Figure:
    """Figures 4-5: for each sample a row with the 4 panels of each method (baseline first, then SSVP)."""
    methods = list(samples)
    n = len(samples[methods[0]])
    fig, axes = plt.subplots(n, 4 * len(methods), figsize=(1.5 * 4 * len(methods), 1.6 * n), squeeze=False)
    for k, method in enumerate(methods):
        outs = samples[method]
        threshold = best_f1_threshold([o["map"] for o in outs], [o["mask"] for o in outs])
        lo, hi = min(o["map"].min() for o in outs), max(o["map"].max() for o in outs)
        for i, o in enumerate(outs):
            four_panels(axes[i, 4 * k:4 * k + 4], o["image"], o["map"], o["mask"], threshold, lo, hi)
        for j, panel in enumerate(("(a)", "(b)", "(c)", "(d)")):
            axes[0, 4 * k + j].set_title(f"{method} {panel}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def tsne_panels(embeddings: dict[str, tuple[np.ndarray, list[str]]], title: str = "") -> plt.Figure:
    """Figure 6: t-SNE of prompt embeddings per model, coloured by class, normal vs anomaly by marker."""
    fig, axes = plt.subplots(1, len(embeddings), figsize=(5 * len(embeddings), 4.2), squeeze=False)
    for ax, (name, (coords, labels)) in zip(axes[0], embeddings.items()):
        frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "label": labels,
                              "state": [lab.split()[0].strip("[") for lab in labels],
                              "class": [lab.split(" ", 1)[1].rstrip("]") for lab in labels]})
        sns.scatterplot(frame, x="x", y="y", hue="class", style="state", ax=ax, s=18, linewidth=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.legend(fontsize=6, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def sensitivity_plot(frame: pd.DataFrame, parameter: str, label: str, peak: float) -> plt.Figure:
    """Figures 7-8: performance against one hyper-parameter; the paper's chosen value is marked."""
    names = {"image_auroc": "I-AUROC", "pixel_auroc": "P-AUROC", "pixel_aupro_legacy": "P-PRO", "pixel_aupro": "P-PRO (exact)"}
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    data = frame.assign(metric=frame.metric.map(names))
    sns.lineplot(data, x="value", y="reproduced", hue="metric", marker="o", ax=ax)
    ax.axvline(peak, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel(label)
    ax.set_ylabel("Performance (%)")
    fig.tight_layout()
    return fig


METHOD_NAMES = {"adaclip": "AdaCLIP", "bayes_pfl": "Bayes-PFL", "ssvp": "SSVP", "anomalyclip": "AnomalyCLIP",
                "aprilgan": "APRIL-GAN", "winclip": "WinCLIP", "vip2clip": "ViP2-CLIP", "dapo": "DAPO"}


def figure3(outputs: dict[str, list[dict]]) -> plt.Figure:
    """Figure 3 from `Study.sample_outputs` per method (the same samples for each): input, GT, one row per method."""
    first = next(iter(outputs.values()))
    return qualitative_grid([o["sample"].cls for o in first], [o["image"] for o in first], [o["mask"] for o in first],
                            {METHOD_NAMES.get(m, m): [o["map"] for o in outs] for m, outs in outputs.items()})


def figure4(baseline: list[dict], ssvp: list[dict], samples: int = 4) -> plt.Figure:
    """Figures 4-5: the first `samples` outputs of the baseline (Bayes-PFL) beside SSVP's, four panels each."""
    return baseline_vs_ssvp({"Baseline": baseline[:samples], "SSVP": ssvp[:samples]})


def close(fig: plt.Figure) -> None:
    plt.close(fig)


__all__ = ["qualitative_grid", "baseline_vs_ssvp", "tsne_panels", "sensitivity_plot", "heat_overlay", "comparison_bars",
           "per_class_bars", "figure3", "figure4", "matplotlib"]


METRIC_LABELS = {"image_auroc": "I-AUROC", "image_f1_max": "I-F1max", "image_ap": "I-AP", "pixel_auroc": "P-AUROC",
                 "pixel_aupro_legacy": "PRO", "pixel_ap": "P-AP", "pixel_aupro": "AUPRO (exact)",
                 "pixel_f1_max": "P-F1max"}


def _error(frame: pd.DataFrame) -> np.ndarray | None:
    """(2, n) distances from each value to its CI bounds, for matplotlib's yerr (None without intervals)."""
    if "ci_low" not in frame or not frame.ci_low.notna().any():
        return None
    low = (frame.reproduced - frame.ci_low).clip(lower=0).fillna(0).to_numpy()
    high = (frame.ci_high - frame.reproduced).clip(lower=0).fillna(0).to_numpy()
    return np.vstack([low, high])


def comparison_bars(frame: pd.DataFrame, metrics: list[str], reference: str | None = None) -> plt.Figure:
    """Table 1 as bars: per dataset (row) and metric (column), reproduced value per method with its 95% CI as an
    error bar, and the paper's value as a black tick (labelled a reference when it belongs to another dataset)."""
    datasets = list(dict.fromkeys(frame.dataset))
    metrics = [m for m in metrics if m in set(frame.metric)]
    panels = [(ds, metric) for ds in datasets for metric in metrics]
    ncols = len(metrics) if len(datasets) > 1 else min(3, len(metrics))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.7 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for (ds, metric), ax in zip(panels, axes.flat):
        sub = frame[(frame.dataset == ds) & (frame.metric == metric)].reset_index(drop=True)
        x = np.arange(len(sub))
        colors = sns.color_palette("tab10", len(sub))
        ax.bar(x, sub.reproduced.fillna(0), color=colors, yerr=_error(sub), capsize=2, error_kw={"lw": 0.8})
        if "paper" in sub and sub.paper.notna().any():
            ax.scatter(x, sub.paper, marker="_", s=220, color="black", linewidths=2, zorder=3,
                       label="paper" + (" (reference)" if reference else ""))
        ax.set_xticks(x)
        ax.set_xticklabels(sub.method, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_title(f"{ds}: {METRIC_LABELS.get(metric, metric)}", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles[:1], labels[:1], loc="upper right", fontsize=7)
    fig.suptitle("Reproduced (bars, 95% bootstrap CI) vs paper (black ticks)" + (f"; {reference}" if reference else ""),
                 fontsize=9)
    fig.tight_layout()
    return fig


def per_class_bars(frame: pd.DataFrame, metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc"),
                   reference: str | None = None) -> plt.Figure:
    """Table 2 as bars: one panel per metric, classes along x, one bar per method with its 95% CI."""
    metrics = [m for m in metrics if m in set(frame.metric)]
    classes = list(dict.fromkeys(frame.cls))
    methods = list(dict.fromkeys(frame.method))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 0.9 * len(classes) * max(1, len(methods)) / 3), 2.8 * len(metrics)),
                             squeeze=False)
    width = 0.8 / max(1, len(methods))
    colors = sns.color_palette("tab10", len(methods))
    for i, metric in enumerate(metrics):
        ax = axes[i, 0]
        for k, method in enumerate(methods):
            sub = frame[(frame.metric == metric) & (frame.method == method)].set_index("cls").reindex(classes).reset_index()
            x = np.arange(len(classes)) + (k - (len(methods) - 1) / 2) * width
            ax.bar(x, sub.reproduced.fillna(0), width, color=colors[k], label=method, yerr=_error(sub), capsize=1.5,
                   error_kw={"lw": 0.6})
            if "paper" in sub and sub.paper.notna().any():
                ax.scatter(x, sub.paper, marker="_", s=60, color="black", linewidths=1.5, zorder=3,
                           label=("paper (reference)" if reference else "paper") if k == 0 else None)
        ax.set_xticks(np.arange(len(classes)))
        ax.set_xticklabels(classes, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=min(len(labels), 7), loc="upper center", bbox_to_anchor=(0.5, 0.965))
    fig.suptitle("Per class: reproduced (bars) with 95% bootstrap CI (error bars)", fontsize=9, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig
