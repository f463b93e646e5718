"""Build ssvp_core/reports/data/reported.csv from the transcribed paper tables in ../shared/papers/*.md and from
AnomalyVFM's published result files.

Run once when the transcriptions change: `python tools/extract_reported.py ../shared/papers [ANOMALYVFM_CHECKOUT]`.
ANOMALYVFM_CHECKOUT is a checkout of MaticFuc/AnomalyVFM (its README.md and results/<backbone>/<group>/<dataset>/
result.csv); without it the AnomalyVFM rows already in the CSV are kept. Each row keeps its source (paper, table,
row, column); values are in percent as printed (Table 4 is in raw units; AnomalyVFM's fractions are scaled by 100).
"""
from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "ssvp_core" / "reports" / "data" / "reported.csv"
FIELDS = ["paper", "table", "dataset", "cls", "method", "metric", "value", "std", "source"]

DATASETS = {"MVTec-AD": "mvtec", "MVTec AD": "mvtec", "VisA": "visa", "BTAD": "btad", "KSDD2": "ksdd2", "RSDD": "rsdd",
            "DAGM": "dagm", "DTD-Syn": "dtd", "DTD-Synthetic": "dtd", "MPDD": "mpdd", "KSDD": "ksdd", "HeadCT": "headct",
            "BrainMRI": "brainmri", "Brain35H": "br35h", "ISIC": "isic", "CVC-ColonDB": "colondb", "CVC-ClinicDB": "clinicdb",
            "Endo": "endo", "Kvasir": "kvasir", "AVERAGE": "average"}
METHODS = {"WinCLIP": "winclip", "APRIL-GAN": "aprilgan", "AnomalyCLIP": "anomalyclip", "AdaCLIP": "adaclip",
           "Bayes-PFL": "bayes_pfl", "**SSVP**": "ssvp", "SSVP": "ssvp", "CLIP": "clip", "AA-CLIP": "aaclip",
           "**ViP²-CLIP**": "vip2clip"}


def tables(text: str, heading: str) -> list[list[list[str]]]:
    """Markdown tables following `heading` (until the next heading of the same or higher level)."""
    start = text.index(heading)
    level = heading.split()[0]
    rest = text[start + len(heading):]
    nxt = re.search(rf"^{re.escape(level)} ", rest, flags=re.M)
    block = rest[: nxt.start()] if nxt else rest
    found, cur = [], []
    for line in block.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.replace("\\|", "¦").strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                cur.append(cells)
        elif cur:
            found.append(cur)
            cur = []
    if cur:
        found.append(cur)
    return found


def triple(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"[\d.]+", cell)]


def ssvp_rows(text: str) -> list[dict]:
    rows = []
    image, pixel = tables(text, "### 8.1")[:2]
    for table, names, level in ((image, ("image_auroc", "image_f1_max", "image_ap"), "image"),
                                (pixel, ("pixel_auroc", "pixel_aupro", "pixel_ap"), "pixel")):
        header = table[0]
        for r in table[1:]:
            ds = DATASETS[r[0].strip("*")]
            for col, cell in zip(header[1:], r[1:]):
                for metric, v in zip(names, triple(cell)):
                    rows.append(dict(paper="SSVP", table=f"Table 1 ({level})", dataset=ds, cls="mean", method=METHODS[col],
                                     metric=metric, value=v, std="", source=f"SSVP v2 Table 1 {level}-level, row {r[0]}, column {col}"))
    t2 = tables(text, "### 8.2")[0]
    methods = ["winclip", "anomalyclip", "adaclip", "bayes_pfl", "ssvp"]
    for r in t2[1:]:
        cls = r[0].strip("*").lower().replace(" ", "_")
        cls = "mean" if cls == "average" else cls
        for i, m in enumerate(methods):
            for j, metric in enumerate(("image_auroc", "pixel_auroc")):
                v = float(r[1 + 2 * i + j].strip("*"))
                rows.append(dict(paper="SSVP", table="Table 2", dataset="mvtec", cls=cls, method=m, metric=metric, value=v,
                                 std="", source=f"SSVP v2 Table 2, row {r[0]}, {m} {'IL' if j == 0 else 'PL'}"))
    t3 = tables(text, "### 8.3")[0]
    for r in t3[1:]:
        model = r[0].split()[0]
        for metric, cell in (("image_auroc", r[4]), ("pixel_auroc", r[5])):
            v, sd = triple(cell)
            rows.append(dict(paper="SSVP", table="Table 3", dataset="mvtec", cls="mean", method=f"model-{model}", metric=metric,
                             value=v, std=sd, source=f"SSVP v2 Table 3, row {r[0]} (HSVS {r[1]}, VCPG {r[2]}, VTAM {r[3]})"))
    t4 = tables(text, "### 8.4")[0]
    for r in t4[1:]:
        metric = {"TIR-FG (↑)": "tir_fg", "SCD-Normal (↓)": "scd_normal", "SCD-Abnormal (↓)": "scd_abnormal"}[r[0]]
        for method, cell in (("baseline", r[1]), ("ssvp", r[2])):
            rows.append(dict(paper="SSVP", table="Table 4", dataset="mvtec", cls="mean", method=method, metric=metric,
                             value=float(cell), std="", source=f"SSVP v2 Table 4, row {r[0]}, column {'Baseline (Identity)' if method == 'baseline' else 'SSVP (Full)'}"))
    t5 = tables(text, "### 8.5")[0]
    seen = set()
    for r in t5[1:]:
        key = (r[0].split(" (")[0], r[1])
        if key in seen:
            continue  # the DINOv3 ViT-L row is printed twice
        seen.add(key)
        backbone = f"{r[0].split(' (')[0]} {r[1]}"
        for metric, cell in (("image_auroc", r[3]), ("pixel_auroc", r[4])):
            rows.append(dict(paper="SSVP", table="Table 5", dataset="mvtec", cls="mean", method=f"ssvp[{backbone}]",
                             metric=metric, value=float(cell.strip("*")), std="", source=f"SSVP v2 Table 5, row {r[0]} {r[1]} ({r[2]} M params)"))
    return rows


def vip2_rows(text: str) -> list[dict]:
    rows = []
    found = tables(text, "## 9.")
    specs = [("Table 1 (image)", ("image_auroc", "image_ap", "image_f1_max")), ("Table 1 (pixel)", ("pixel_auroc", "pixel_aupro", "pixel_f1_max")),
             ("Table 2 (image)", ("image_auroc", "image_ap", "image_f1_max")), ("Table 2 (pixel)", ("pixel_auroc", "pixel_aupro", "pixel_f1_max"))]
    for table, (name, metrics) in zip(found, specs):
        header = table[0]
        for r in table[1:]:
            ds = DATASETS[r[0]]
            for col, cell in zip(header[2:], r[2:]):
                starred = "*" in cell
                for metric, v in zip(metrics, triple(cell)):
                    rows.append(dict(paper="ViP2-CLIP", table=name, dataset=ds, cls="mean", method=METHODS[col.strip()],
                                     metric=metric, value=v, std="",
                                     source=f"ViP2-CLIP README assets (arXiv v3) {name}, row {r[0]}, column {col.strip('*')}"
                                            + ("; * = WinCLIP's own paper" if starred else "")))
    return rows


def dapo_rows() -> list[dict]:
    claims = [("v1 abstract", 3.7, 6.5), ("v3 abstract", 3.6, 5.2)]
    rows = []
    for version, image, local in claims:
        rows.append(dict(paper="DAPO", table=version, dataset="average", cls="mean", method="dapo",
                         metric="gain_image_auroc_ap_vs_baselines", value=image, std="",
                         source=f"DAPO {version}: average image-level AUROC/AP improvement over baselines under distribution shift"))
        rows.append(dict(paper="DAPO", table=version, dataset="average", cls="mean", method="dapo",
                         metric="gain_novel_type_localization_vs_baselines", value=local, std="",
                         source=f"DAPO {version}: average improvement localizing novel anomaly types (v3: AUROC and F1)"))
    return rows


# VisualAD's README @8479132 (tables unchanged since 02767eb), "Main Results": AUROC / F1-max / AP (image),
# AUROC / F1-max / AP / PRO (pixel), transcribed as printed (bold dropped). Its test.py computes no PRO (the line is
# commented out in utils/metrics.py); the PRO column comes from the paper's own runs.
VISUALAD_COLUMNS = ["winclip", "aprilgan", "anomalyclip", "adaclip", "visualad", "visualad[dinov2]"]
VISUALAD_HEADERS = ["WinCLIP", "APRIL-GAN", "AnomalyCLIP", "AdaCLIP", "VisualAD (CLIP)", "VisualAD (DINOv2)"]
VISUALAD_IMAGE = """
MVTec-AD | 90.4 / 92.7 / 95.6 | 86.1 / 90.4 / 93.6 | 91.6 / 92.7 / 96.2 | 92.0 / 92.7 / 96.4 | 92.2 / 93.2 / 96.7 | 90.1 / 92.4 / 94.8
VisA | 75.6 / 78.2 / 78.8 | 77.4 / 78.6 / 80.9 | 81.0 / 80.3 / 84.4 | 79.7 / 79.6 / 83.2 | 84.7 / 82.5 / 87.6 | 83.1 / 81.4 / 86.8
BTAD | 68.2 / 67.8 / 70.9 | 73.7 / 68.7 / 69.9 | 88.7 / 86.0 / 90.6 | 90.0 / 87.2 / 91.5 | 94.9 / 93.9 / 97.0 | 88.2 / 84.7 / 89.7
KSDD2 | 93.5 / 86.4 / 94.2 | 90.4 / 82.9 / 92.0 | 91.9 / 84.5 / 93.4 | 94.9 / 90.3 / 96.2 | 98.0 / 93.9 / 98.3 | 97.7 / 93.1 / 98.1
DAGM | 91.8 / 75.8 / 79.5 | 94.4 / 80.3 / 83.9 | 98.0 / 90.6 / 92.4 | 98.3 / 91.5 / 94.2 | 99.5 / 95.0 / 97.8 | 93.2 / 83.9 / 86.1
DTD-Synthetic | 95.1 / 94.1 / 97.7 | 85.5 / 89.1 / 94.0 | 93.7 / 94.3 / 97.4 | 92.1 / 92.4 / 96.3 | 97.5 / 96.6 / 99.1 | 91.0 / 94.4 / 97.4
"""
VISUALAD_PIXEL = """
MVTec-AD | 82.3 / 24.8 / 18.2 / 62.0 | 87.5 / 42.3 / 39.1 / 43.7 | 91.0 / 38.9 / 34.4 / 81.7 | 88.5 / 43.9 / 41.0 / 47.6 | 90.8 / 43.9 / 41.2 / 87.5 | 91.3 / 47.4 / 45.4 / 88.6
VisA | 73.2 / 9.0 / 5.4 / 51.1 | 93.8 / 32.6 / 26.2 / 86.5 | 95.4 / 27.6 / 20.7 / 86.4 | 95.1 / 33.8 / 29.2 / 71.3 | 95.8 / 34.6 / 28.4 / 91.0 | 95.3 / 35.2 / 29.9 / 88.2
BTAD | 72.7 / 18.5 / 12.9 / 27.3 | 91.3 / 40.1 / 37.7 / 21.0 | 93.0 / 47.1 / 41.5 / 71.0 | 87.7 / 42.3 / 36.6 / 17.1 | 91.1 / 49.8 / 43.1 / 80.4 | 93.4 / 42.6 / 38.7 / 76.7
DTD-Synthetic | 79.5 / 16.1 / 9.8 / 51.5 | 94.9 / 60.4 / 61.0 / 33.8 | 97.5 / 55.8 / 52.5 / 87.9 | 95.1 / 58.4 / 56.1 / 34.3 | 98.1 / 64.3 / 65.5 / 94.8 | 96.7 / 65.8 / 67.7 / 92.4
"""


def visualad_rows() -> list[dict]:
    rows = []
    for text, level, metrics in ((VISUALAD_IMAGE, "image", ("image_auroc", "image_f1_max", "image_ap")),
                                 (VISUALAD_PIXEL, "pixel", ("pixel_auroc", "pixel_f1_max", "pixel_ap", "pixel_aupro"))):
        for line in text.strip().splitlines():
            name, *cells = [c.strip() for c in line.split("|")]
            for method, header, cell in zip(VISUALAD_COLUMNS, VISUALAD_HEADERS, cells):
                for metric, v in zip(metrics, triple(cell)):
                    rows.append(dict(paper="VisualAD", table=f"README ({level})", dataset=DATASETS[name], cls="mean",
                                     method=method, metric=metric, value=v, std="",
                                     source=f"VisualAD README @8479132 {level}-level ZSAD table, row {name}, column {header}"))
    return rows


ANOMALYVFM_COMMIT = "4da96b4"
# AnomalyVFM's dataset folder names -> the kit's (unknown to the kit: their name, hyphenated)
ANOMALYVFM_DATASETS = {"mvtec_ad": "mvtec", "real_iad": "real-iad", "cvc_colondb": "colondb", "cvc_clinicdb": "clinicdb",
                       "thyro": "tn3k", "real_iad_3d": "real-iad-d3"}
ANOMALYVFM_METRICS = {"AUROC-IMG": "image_auroc", "F1-IMG": "image_f1_max", "AP-IMG": "image_ap",
                      "AUROC-PIXEL": "pixel_auroc", "F1-PIXEL": "pixel_f1_max", "AP-PIXEL": "pixel_ap",
                      "AUPRO-0.3": "pixel_aupro"}
ANOMALYVFM_README_TABLES = {"Industiral datasets": ("industrial", ["image_auroc", "image_f1_max", "image_ap", "pixel_auroc",
                                                                  "pixel_f1_max", "pixel_ap", "pixel_aupro"]),
                            "Medical datasets - Image level": ("medical image", ["image_auroc", "image_f1_max", "image_ap"]),
                            "Medical datasets - Pixel level": ("medical pixel", ["pixel_auroc", "pixel_f1_max", "pixel_ap",
                                                                                 "pixel_aupro"])}
PER_CLASS = ("mvtec", "visa")  # per-class rows kept for these; every other dataset by its mean


def anomalyvfm_rows(repo: Path) -> list[dict]:
    """AnomalyVFM's per-backbone results: results/<backbone>/<group>/<dataset>/result.csv (fractions; a class row per
    category and an `Average` row; the metrics of the level a set has no labels for are written as 0 and skipped)
    and the README's three average tables (industrial: MVTec-AD, VisA, Real-IAD, MPDD, BTAD, KSDD, KSDD2, DTD, DAGM;
    medical image level; medical pixel level)."""
    rows = []
    for path in sorted((repo / "results").glob("*/*/*/result.csv")):
        backbone, group, name = path.parts[-4], path.parts[-3], path.parts[-2]
        dataset = ANOMALYVFM_DATASETS.get(name, name.replace("_", "-"))
        skip = {"medical_image": "pixel_", "medical_pixel": "image_"}.get(group, "-")
        with path.open() as f:
            for record in csv.DictReader(f):
                cls = "mean" if record["Category"] == "Average" else record["Category"]
                if cls != "mean" and dataset not in PER_CLASS:
                    continue
                for column, metric in ANOMALYVFM_METRICS.items():
                    if metric.startswith(skip):
                        continue
                    rows.append(dict(paper="AnomalyVFM", table=f"results ({backbone})", dataset=dataset, cls=cls,
                                     method=f"anomalyvfm[{backbone}]", metric=metric,
                                     value=round(100 * float(record[column]), 4), std="",
                                     source=f"MaticFuc/AnomalyVFM@{ANOMALYVFM_COMMIT} results/{backbone}/{group}/{name}/"
                                            f"result.csv, row {record['Category']}, column {column}"))
    readme = (repo / "README.md").read_text()
    for heading, (label, metrics) in ANOMALYVFM_README_TABLES.items():
        block = readme[readme.index(heading):]
        table = tables(f"## x\n{block}", "## x")[0]
        for r in table[1:]:
            backbone = r[0].strip("*").lower()
            for metric, cell in zip(metrics, r[-len(metrics):]):
                rows.append(dict(paper="AnomalyVFM", table=f"README ({label})", dataset="average", cls="mean",
                                 method=f"anomalyvfm[{backbone}]", metric=metric, value=float(cell), std="",
                                 source=f"MaticFuc/AnomalyVFM@{ANOMALYVFM_COMMIT} README.md table '{heading}', "
                                        f"row {r[0].strip('*')}"))
    return rows


def kept_rows(paper: str) -> list[dict]:
    if not OUT.is_file():
        return []
    with OUT.open() as f:
        return [r for r in csv.DictReader(f) if r["paper"] == paper]


def main(papers: Path, anomalyvfm: Path | None = None) -> None:
    rows = (ssvp_rows((papers / "SSVP.md").read_text()) + vip2_rows((papers / "ViP2-CLIP.md").read_text()) + dapo_rows()
            + visualad_rows())
    rows += anomalyvfm_rows(anomalyvfm) if anomalyvfm else kept_rows("AnomalyVFM")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} rows -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/papers"), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
