"""Write notebooks/*.ipynb: one thin, parameterized notebook per table / figure page (no stored outputs).

Each notebook: a title cell, a `parameters` cell (papermill), and one call into ssvp_core.reports.pages.
Run `python tools/make_notebooks.py` after changing a page's parameters.
"""
from pathlib import Path

import nbformat as nbf

NOTEBOOKS = {
    "table1": ("Table 1: comparison with the state of the art", "SSVP v2 Table 1: 7 datasets x methods, image (AUROC, F1-max, AP) and pixel (AUROC, PRO, AP).",
               {"datasets": None, "methods": None}),
    "table2": ("Table 2: MVTec-AD per class", "SSVP v2 Table 2: image- and pixel-level AUROC per class.", {"dataset": None, "methods": None}),
    "table3": ("Table 3: component ablation", "SSVP v2 Table 3: models A-E, mean ± std over seeds. `baseline`: what row A "
               "(Bayes-PFL) shares with rows B-E: shared_schedule (epochs, batch, optimiser, schedule, test sigma) | "
               "shared_schedule_and_backbone | released (Bayes-PFL's own settings).",
               {"dataset": None, "seeds": None, "baseline": "shared_schedule"}),
    "table4": ("Table 4: semantic-visual alignment", "SSVP v2 Table 4: TIR-FG and SCD (Eqs. 23-24). `tir_layers`: mean | last | a tapped-layer "
               "index (Eq. 23's patch features); `t_static`: handcrafted | t_init (Eq. 24's static prototype).",
               {"dataset": None, "tir_layers": "mean", "t_static": "handcrafted"}),
    "table5": ("Table 5: auxiliary visual backbone", "SSVP v2 Table 5: MAE, DINOv2, DINOv3 S+/B/L as the structural encoder.", {"dataset": None}),
    "qualitative": ("Figures 3-5: qualitative results", "Heat maps of AdaCLIP, Bayes-PFL and SSVP (Fig. 3) and the 4-panel baseline-vs-SSVP layout (Figs. 4-5).",
                    {"dataset": None, "other_datasets": None}),
    "tsne": ("Figure 6: t-SNE of prompt embeddings", "Prompt embeddings of the baseline and of SSVP, per image.", {"dataset": None}),
    "sensitivity": ("Figures 7-8: sensitivity to gamma and xi", "Step-wise coordinate search around gamma = 0.5 and xi = 0.85.",
                    {"dataset": None, "gammas": None, "xis": None}),
    "efficiency": ("Efficiency", "Parameters, GFLOPs, latency and peak memory of every method (the paper has none), "
                   "and the GPU table `bench/gpu.py --out` wrote (`gpu_table`: its path, None = bench/results/gpu.md).",
                   {"methods": None, "gpu_table": None}),
    "vip2clip": ("ViP2-CLIP's tables", "ViP2-CLIP (arXiv 2505.17692) Tables 1-2 layout.", {"datasets": None, "methods": None}),
    "dapo": ("DAPO's tables", "DAPO (arXiv 2512.09446): binary and multi-type defect segmentation.", {"datasets": None}),
}


def make(name: str, title: str, text: str, extra: dict) -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = ['profile = "smoke"  # smoke | paper | path to a preset YAML', f'out_dir = "reports/smoke/{name}"']
    params += [f"{k} = {v!r}" for k, v in extra.items()]
    params += ["overrides = []  # extra config overrides", "device = \"auto\""]
    call_args = ", ".join(["profile=profile", "out_dir=out_dir"] + [f"{k}={k}" for k in extra] + ["overrides=overrides", "device=device"])
    cells = [
        nbf.v4.new_markdown_cell(f"# {title}\n\n{text}\n\nAll logic lives in `ssvp_core.reports.pages.{name}`; this notebook "
                                 "only sets parameters (papermill) and displays. In the smoke profile the numbers check the "
                                 "pipeline, not the method."),
        nbf.v4.new_code_cell("\n".join(params), metadata={"tags": ["parameters"]}),
        nbf.v4.new_code_cell(f"from ssvp_core.reports import pages\n\nresult = pages.{name}({call_args})"),
    ]
    for i, cell in enumerate(cells):  # stable ids: regenerating an unchanged notebook changes nothing
        cell["id"] = f"{name}-{i}"
    nb.cells = cells
    return nb


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, (title, text, extra) in NOTEBOOKS.items():
        nbf.write(make(name, title, text, extra), out / f"{name}.ipynb")
    print(f"{len(NOTEBOOKS)} notebooks in {out}")
