"""The pages of the report: one notebook each (`notebooks/<name>.ipynb`), its title, the paper table it reproduces,
the files it reads besides the package, and the models and evaluations it needs with its default parameters (the
same `tables.*_jobs` functions its notebook calls, so that `ssvp plan` lists exactly what the pages will read).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import tables
from .efficiency import GPU_TABLE

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"  # the source checkout's notebooks/ (not installed)


@dataclass(frozen=True)
class PageSpec:
    name: str
    title: str
    jobs: Callable = field(default=lambda study: [])  # study -> [Model | EvalJob] with the notebook's default parameters
    inputs: tuple[str, ...] = ()  # workspace files the page reads besides the package: a change re-runs its notebook


def _sensitivity_jobs(study):
    grid = study.section("sensitivity", {})
    return (tables.sensitivity_jobs(study, "gamma", grid.get("gamma", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
            + tables.sensitivity_jobs(study, "xi", grid.get("xi", [0.70, 0.75, 0.80, 0.85, 0.90, 0.95])))


def _vip2clip_jobs(study):
    medical = [ds for ds in study.section("vip2clip_medical", []) if study.dataset_root(ds).exists()]
    return tables.vip2clip_jobs(study) + (tables.vip2clip_jobs(study, medical) if medical else [])


PAGES: dict[str, PageSpec] = {spec.name: spec for spec in (
    PageSpec("table1", "Table 1: comparison with the state of the art", tables.table1_jobs),
    PageSpec("table2", "Table 2: MVTec-AD per class", tables.table2_jobs),
    PageSpec("table3", "Table 3: component ablation", tables.table3_jobs),
    PageSpec("table4", "Table 4: semantic-visual alignment", tables.table4_models),
    PageSpec("table5", "Table 5: auxiliary visual backbone", tables.table5_jobs),
    PageSpec("qualitative", "Figures 3-5: qualitative results", tables.qualitative_models),
    PageSpec("tsne", "Figure 6: t-SNE of prompt embeddings", tables.tsne_models),
    PageSpec("sensitivity", "Figures 7-8: sensitivity to gamma and xi", _sensitivity_jobs),
    PageSpec("efficiency", "Efficiency (not in the paper)", inputs=(GPU_TABLE,)),
    PageSpec("vip2clip", "ViP2-CLIP's tables", _vip2clip_jobs),
    PageSpec("dapo", "DAPO's tables (multi-type segmentation)", tables.dapo_jobs),
)}


def load_manifest(folder: Path) -> dict | None:
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None
