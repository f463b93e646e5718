"""The experiment plan (`ssvp plan`): every training and evaluation the selected pages read, deduplicated, with its
dependencies, what the workspace already holds, and what the rest will cost.

Jobs. The pages list their jobs with the notebooks' default parameters (`catalog.PAGES[name].jobs`, the same
`tables.*_jobs` functions the notebooks call), so the plan holds exactly what the pages will read:
* a training per configuration fingerprint (`train/<method>/<fingerprint>`): Table 3's model E is Table 1's SSVP,
  the t-SNE page's models are Table 4's, and one SSVP trained on VisA serves every target that protocol maps to it;
* an evaluation per stored result (`eval/<method>/<fingerprint>/<target>-<digest>`, the name of the file
  `Study.evaluation` writes): a job asking for bootstrap resamples also serves one that needs none. It needs its
  model's training (training-free methods need nothing).
Pages that compute from trained models in the notebook (Table 4's alignment, t-SNE, qualitative maps) add their
trainings only; the efficiency page adds nothing.

Cost (costs.py says what is counted and assumed). A training: the frozen forward of every training image once
(with the feature cache; every epoch without it), plus epochs x (images x step + batches x classes per batch x
prompt step). Dataset sizes come from the disk when a dataset is there, else from the published sizes
(`data/dataset_sizes.csv`); a job whose size or FLOP count is unknown is listed without an estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import ConfigError, SSVPError
from ..methods import method_spec
from .catalog import PAGES
from .costs import FlopCount, Throughput, cost_key, describe_backbones, published_sizes, read_counts, resolved_precision
from .experiments import EvalJob, Model, OfModel, Study


@dataclass
class PlannedJob(OfModel):
    id: str
    kind: str  # "train" | "evaluate"
    model: Model
    evaluation: EvalJob | None = None
    needs: tuple[str, ...] = ()
    pages: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    done: bool = False
    images: int | None = None  # training: images per epoch; evaluation: test images
    epochs: float = 0  # passes over the data (fractional for a step-counted training)
    gflops: float | None = None
    gpu_hours: float | None = None
    rate: str = ""  # where the sustained TFLOP/s comes from
    peak_memory_mb: float = math.nan
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    study: Study
    pages: list[str]
    jobs: list[PlannedJob]  # trainings first, then evaluations: every job after what it needs
    throughput: Throughput

    def job(self, job_id: str) -> PlannedJob:
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise KeyError(job_id)

    def todo(self) -> list[PlannedJob]:
        return [job for job in self.jobs if not job.done]

    def frame(self) -> pd.DataFrame:
        """One row per job, as `ssvp plan` prints it (and writes with --csv)."""
        rows = []
        for job in self.jobs:
            rows.append({
                "job": job.id, "needs": " ".join(job.needs) or "—", "pages": " ".join(job.pages),
                "labels": " ".join(label for label in job.labels if label) or "—", "method": job.method,
                "data": (f"{self.study.trained_on(job.method, job.target)}" if job.kind == "train"
                         else f"{job.target}" + (" (bootstrap)" if job.evaluation.bootstrap else "")
                         + (" (multi-type)" if job.evaluation.multitype else "")),
                "images": job.images, "epochs": job.epochs if job.kind == "train" else None,
                "TFLOP": None if job.gflops is None else job.gflops / 1e3,
                "GPU-h": job.gpu_hours, "peak MiB": job.peak_memory_mb,
                "state": "done" if job.done else "to run", "notes": "; ".join(job.notes)})
        return pd.DataFrame(rows)

    def totals(self) -> dict:
        def hours(jobs):
            return sum(job.gpu_hours for job in jobs if job.gpu_hours is not None)

        trainings = [j for j in self.jobs if j.kind == "train"]
        evaluations = [j for j in self.jobs if j.kind == "evaluate"]
        return {"trainings": len(trainings), "trainings_done": sum(j.done for j in trainings),
                "evaluations": len(evaluations), "evaluations_done": sum(j.done for j in evaluations),
                "gpu_hours": hours(self.jobs), "gpu_hours_remaining": hours(self.todo()),
                "unestimated": [j.id for j in self.jobs if j.gpu_hours is None]}

    def by_method(self) -> pd.DataFrame:
        """Per method: its trainings and evaluations, their TFLOP and GPU-hours, and how many jobs have no estimate
        (the paper profile's cost table in the README); a last row sums them."""
        rows = []
        for method in dict.fromkeys(job.method for job in self.jobs):
            jobs = [j for j in self.jobs if j.method == method]
            train = [j for j in jobs if j.kind == "train"]
            evaluate = [j for j in jobs if j.kind == "evaluate"]
            rows.append({"method": method, "trainings": len(train), "evaluations": len(evaluate),
                         "TFLOP": sum(j.gflops for j in jobs if j.gflops is not None) / 1e3,
                         "GPU-h train": sum(j.gpu_hours for j in train if j.gpu_hours is not None),
                         "GPU-h evaluate": sum(j.gpu_hours for j in evaluate if j.gpu_hours is not None),
                         "no estimate": sum(j.gpu_hours is None for j in jobs),
                         "to run": sum(not j.done for j in jobs)})
        frame = pd.DataFrame(rows)
        total = frame.drop(columns=["method"]).sum()
        frame.loc[len(frame)] = {"method": "total", **total.to_dict()}
        return frame

    def render(self, by_method: bool = False) -> str:
        """The plan as text: the job table (or, `by_method`, one row per method), then the totals and the
        assumptions behind them."""
        frame = self.frame()
        shown = frame.drop(columns=["notes"]).copy()
        shown["TFLOP"] = [_fmt(v) for v in frame["TFLOP"]]
        shown["GPU-h"] = [_fmt(v) for v in frame["GPU-h"]]
        shown["peak MiB"] = ["—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"
                             for v in frame["peak MiB"]]
        shown["images"] = ["?" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v)}"
                           for v in frame["images"]]
        shown["epochs"] = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"
                           for v in frame["epochs"]]
        t = self.totals()
        lines = [f"plan for profile {self.study.profile!r}, pages {' '.join(self.pages)}; workspace "
                 f"{self.study.workspace.root}" + (f"; overrides {' '.join(self.study.overrides)}"
                                                   if self.study.overrides else ""), "",
                 self._method_table() if by_method else shown.to_markdown(index=False, disable_numparse=True), "",
                 f"{t['trainings']} trainings ({t['trainings_done']} done), {t['evaluations']} evaluations "
                 f"({t['evaluations_done']} done)",
                 f"estimated GPU-hours: {_fmt(t['gpu_hours'])} in total, {_fmt(t['gpu_hours_remaining'])} remaining "
                 f"({self.rate_note()})"]
        notes = sorted({note for job in self.jobs for note in job.notes})
        if t["unestimated"]:
            lines.append(f"no estimate for {len(t['unestimated'])} job(s) (their notes say why); the totals leave "
                         "them out")
        lines += [f"note: {n}" for n in notes]
        return "\n".join(lines)

    def _method_table(self) -> str:
        shown = self.by_method()
        for column in ("TFLOP", "GPU-h train", "GPU-h evaluate"):
            shown[column] = [_fmt(v) for v in shown[column]]
        for column in ("trainings", "evaluations", "no estimate", "to run"):
            shown[column] = [f"{int(v)}" for v in shown[column]]
        return shown.to_markdown(index=False, disable_numparse=True)

    def rate_note(self) -> str:
        tp = self.throughput
        if tp.measured:
            return f"rates measured on {tp.measured_on} where the GPU table has the method, else {tp.gpu} peak x " \
                   f"{tp.utilisation:g}"
        return f"{tp.gpu} dense peak for each method's precision x {tp.utilisation:g} utilisation, FLOPs counted " \
               "by the kit; data loading and metrics not counted"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def page_names(only: list[str] | None = None) -> list[str]:
    names = list(only or PAGES)
    unknown = [n for n in names if n not in PAGES]
    if unknown:
        raise ConfigError(f"unknown page(s) {unknown}; pages: {' '.join(PAGES)}")
    return names


def train_id(study: Study, model: Model) -> str:
    return f"train/{model.method}/{study.config(model).fingerprint()}"


def eval_id(study: Study, job: EvalJob) -> str:
    # the file Study.evaluation stores the result in names the evaluation (model fingerprint, target, settings)
    return f"eval/{job.method}/{study.config(job.model).fingerprint()}/{study._eval_path(job).stem}"


def build_plan(study: Study, only: list[str] | None = None, throughput: Throughput | None = None,
               counts: dict[str, FlopCount] | None = None) -> Plan:
    """The deduplicated jobs of the pages `only` (default: all), in dependency order, with their state and cost."""
    pages = page_names(only)
    trainings: dict[str, PlannedJob] = {}
    evaluations: dict[str, PlannedJob] = {}
    for page in pages:
        for item in PAGES[page].jobs(study):
            model = item.model if isinstance(item, EvalJob) else item
            needs: tuple[str, ...] = ()
            if method_spec(model.method).trainable:
                tid = train_id(study, model)
                planned = trainings.setdefault(tid, PlannedJob(tid, "train", model))
                _add_use(planned, page, model.label)
                needs = (tid,)
            if isinstance(item, EvalJob):
                eid = eval_id(study, item)
                planned = evaluations.setdefault(eid, PlannedJob(eid, "evaluate", model, item, needs))
                if item.bootstrap and not planned.evaluation.bootstrap:  # the stronger request serves both
                    planned.evaluation = item
                _add_use(planned, page, model.label)
    jobs = list(trainings.values()) + list(evaluations.values())
    for job in jobs:
        job.done = study.is_trained(job.model) if job.kind == "train" else study.cached_evaluation(job.evaluation) is not None
    throughput = throughput or Throughput()
    _estimate(study, jobs, throughput, read_counts() if counts is None else counts)
    return Plan(study, pages, jobs, throughput)


def _add_use(job: PlannedJob, page: str, label: str) -> None:
    if page not in job.pages:
        job.pages.append(page)
    if label and label not in job.labels:
        job.labels.append(label)


# -- cost ------------------------------------------------------------------------------------------------------------
def dataset_size(study: Study, name: str) -> tuple[int, int] | None:
    """(test images, classes) of a dataset: counted on disk when it is there, else the published size, else None."""
    from ..data import read_dataset

    root = study.dataset_root(name)
    if root.exists():
        try:
            samples = read_dataset(name, root, "test")
            return len(samples), len({s.cls for s in samples})
        except SSVPError:
            pass
    published = published_sizes()
    if name in published:
        images, classes, _ = published[name]
        return images, classes
    return None


def _count_for(counts: dict[str, FlopCount], study: Study, cfg) -> tuple[FlopCount | None, bool]:
    """The stored count of this configuration, else (marked approximate) one of the same method and profile."""
    exact = counts.get(cost_key(cfg))
    if exact is not None:
        return exact, False
    same = [c for c in counts.values() if c.method == cfg.method and c.profile == cfg.profile]
    default = cost_key(study.config(Model(cfg.method, study.main_target)))
    same.sort(key=lambda c: c.cost_key != default)  # the method's default backbones first
    return (same[0], True) if same else (None, False)


def expected_classes(classes: int, batch: int) -> float:
    """Expected number of distinct classes among `batch` items drawn at random from `classes` equally large ones."""
    if classes <= 1:
        return 1.0
    return classes * (1 - (1 - 1 / classes) ** batch)


def _estimate(study: Study, jobs: list[PlannedJob], throughput: Throughput, counts: dict[str, FlopCount]) -> None:
    sizes: dict[str, tuple[int, int] | None] = {}
    caches_built: dict[tuple, str] = {}

    def size(name):
        if name not in sizes:
            sizes[name] = dataset_size(study, name)
        return sizes[name]

    for job in jobs:
        cfg = study.config(job.model)
        count, approximate = _count_for(counts, study, cfg)
        job.peak_memory_mb = throughput.peak_memory_mb(job.method)
        if job.kind == "train":
            names = study.sources(job.method, job.target)
            job.epochs = cfg.train.epochs
        else:
            names = [job.target]
        found = [size(n) for n in names]
        missing = [n for n, s in zip(names, found) if s is None]
        if missing:
            job.notes.append(f"size of {', '.join(missing)} unknown: put it under "
                             f"{', '.join(str(study.dataset_root(n)) for n in missing)} and the plan counts it")
        else:
            job.images = sum(s[0] for s in found)
        if count is None:
            job.notes.append(f"no FLOP count for {job.method} in profile {cfg.profile!r}: "
                             f"`python tools/measure_costs.py --profile {study.profile}`")
        elif approximate:
            job.notes.append(f"{describe_backbones(cfg)} not counted: {job.method}'s count for {count.backbones} used")
        if missing or count is None:
            continue
        classes = sum(s[1] for s in found)
        if job.kind == "train":
            batch = cfg.train.batch_size
            steps = math.ceil(job.images / batch)
            if cfg.train.steps > 0:  # step-counted (AnomalyVFM): steps x batch images, in passes over the data
                job.epochs = cfg.train.steps * batch / job.images
                job.notes.append(f"{cfg.train.steps} steps of {batch} images ({job.epochs:.3g} passes over the data)")
            per_epoch = job.images * count.step_per_image + steps * expected_classes(classes, batch) * count.step_per_class
            cached = count.cacheable and bool(cfg.train.feature_cache) and cfg.train.mosaic == 0
            frozen = job.images * count.frozen_per_image
            gflops = job.epochs * (per_epoch + (0.0 if cached else frozen))
            if cached:
                key = (count.cost_key, tuple(names), cfg.train.feature_cache_dtype)
                if key in caches_built:
                    job.notes.append(f"frozen features cached by {caches_built[key]}")
                else:
                    caches_built[key] = job.id
                    gflops += frozen
        else:
            batch = cfg.eval.batch_size
            class_batches = math.ceil(job.images / batch) + classes - 1  # test images are read class by class
            gflops = job.images * count.eval_per_image + class_batches * count.eval_per_class
        job.gflops = gflops
        tflops, job.rate = throughput.tflops(job.method, resolved_precision(cfg), count.eval_per_image)
        job.gpu_hours = gflops / (tflops * 1e3) / 3600


def cost_configurations(profile: str, only: list[str] | None = None, overrides=()) -> dict[str, tuple]:
    """Every distinct FLOP-count identity among the models of a profile's pages: cost key -> (method, the model's
    overrides, backbones in words), for `tools/measure_costs.py`."""
    study = Study(profile, overrides=overrides)
    out: dict[str, tuple] = {}
    for page in page_names(only):
        for item in PAGES[page].jobs(study):
            model = item.model if isinstance(item, EvalJob) else item
            cfg = study.config(model)
            out.setdefault(cost_key(cfg), (model.method, tuple(model.extra) + tuple(overrides), describe_backbones(cfg)))
    return out


__all__ = ["Plan", "PlannedJob", "build_plan", "page_names", "train_id", "eval_id", "dataset_size",
           "expected_classes", "cost_configurations"]
