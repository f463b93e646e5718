"""A reproduction study: one profile resolved once (its workspace, preset and protocol) and the steps every page
of the paper runs, each cached on disk so that notebooks, `ssvp reproduce` and `ssvp plan` share the work.

Jobs. A `Model` names one training (or the build of a training-free method): a method, the target whose protocol
rule chooses its training data, the page's own overrides (ablation switches, a sensitivity value) and a seed. Its
identity is the fingerprint of the configuration it resolves to, so two pages asking for the same model (Table 3's
row E is Table 1's SSVP) share one training. An `EvalJob` is the evaluation of a model on its target. A page lists
the jobs it reads (`tables.*_jobs`); the notebook runs them through `Study.train` and `Study.evaluate`, one cell
each, and then assembles its tables from the cached results.

Protocol. Each method's own paper decides the auxiliary dataset of every target (preset `protocol`: SSVP trains on
VisA for every target but VisA, AnomalyCLIP-style papers on MVTec-AD for every target but MVTec-AD). Where a paper's
published numbers come from other data than any rule can give (AnomalyVFM's synthetic set), its entry in the paper
preset says so (`published_training`), and the tables name both: what trained our model, what trained theirs.

Caches. A model is trained once per configuration (`runs/<profile>/<method>/<fingerprint>/`, the engine's run
folder and its lock) and evaluated once per (model, target, evaluation settings) (`.../eval/<target>-<digest>.pkl`).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import io
from .. import progress as progress_bars
from ..config import RunConfig, load_config, load_preset
from ..errors import ConfigError
from ..methods import build_detector, method_spec
from ..workspace import Workspace, find
from . import SMOKE_BANNER

WILDCARD = "*"


@dataclass(frozen=True)
class Model:
    """One model a page needs: `method` trained under the protocol rule of `target`, with `extra` overrides."""

    method: str
    target: str
    extra: tuple[str, ...] = ()
    seed: int | None = None
    label: str = field(default="", compare=False)  # how the page names it (Table 3's "A", a sensitivity value)


class OfModel:
    """Something about one `model` (an evaluation, a planned job): its method and target are the model's."""

    model: Model

    @property
    def method(self) -> str:
        return self.model.method

    @property
    def target(self) -> str:
        return self.model.target


@dataclass(frozen=True)
class EvalJob(OfModel):
    """The evaluation of `model` on its target; `bootstrap`: with resamples for CIs; `multitype`: DAPO's per-type
    segmentation."""

    model: Model
    bootstrap: bool = False
    multitype: bool = False


@dataclass
class Evaluation:
    metrics: pd.DataFrame
    samples: pd.DataFrame
    extra: dict = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        rows = self.metrics[(self.metrics.cls == "mean") & (self.metrics.metric == metric)]
        return float(rows.value.iloc[0]) if len(rows) else float("nan")


def protocol_of(spec, profile: str, method: str | None = None) -> dict:
    """{"source", "rules": [{"train": [names], "eval": [names or "*"]}], "published_training"} of a preset's
    `protocol`: either one rule list for every method (smoke) or a mapping method -> {source, rules,
    published_training} with a `default` entry (paper, rehearsal: each paper's own auxiliary data, see paper.yaml).
    `published_training` says what produced the paper-reported numbers: "auxiliary" (the rules; the default) or
    "synthetic" (AnomalyVFM)."""
    if isinstance(spec, dict):
        entry = spec.get(method) or spec.get("default")
        if entry is None:
            raise ConfigError(f"profile {profile!r} has no protocol for method {method!r} and no `default` "
                              "under `protocol:`")
        source, rules = entry.get("source", ""), entry.get("rules") or []
        published = entry.get("published_training", "auxiliary")
    else:
        source, rules, published = "", spec, "auxiliary"
    if published not in ("auxiliary", "synthetic"):
        raise ConfigError(f"profile {profile!r}, protocol of {method!r}: published_training={published!r}; use "
                          "auxiliary or synthetic")
    rules = [{"train": [r["train"]] if isinstance(r["train"], str) else list(r["train"]), "eval": list(r["eval"])}
             for r in rules]
    return {"source": source, "rules": rules, "published_training": published}


def rule_sources(rules: list[dict], target: str, profile: str, method: str | None) -> list[str]:
    """The training datasets of the rule naming `target`, else of the wildcard rule."""
    for rule in rules:
        if target in rule["eval"]:
            return rule["train"]
    for rule in rules:
        if WILDCARD in rule["eval"]:
            return rule["train"]
    raise ConfigError(f"profile {profile!r} has no protocol rule for target {target!r} and method {method!r}; "
                      "add it under `protocol:`")


def models_of(jobs) -> list[Model]:
    """The models behind a list of jobs (Model or EvalJob), in order, without repeats."""
    return list(dict.fromkeys(j.model if isinstance(j, EvalJob) else j for j in jobs))


def free_first(items, busy):
    """`items` in turn, each time the first that `busy` does not report (another process, e.g. a notebook running
    beside this one, is training or evaluating it now): this process does the others meanwhile instead of waiting
    for that lock, and usually finds the busy ones done, and reuses them, when only busy ones are left."""
    pending = list(items)
    while pending:
        item = ([i for i in pending if not busy(i)] or pending)[0]
        pending.remove(item)
        yield item


class Study:
    """A profile resolved once: workspace root, preset, protocol, overrides and device, with the steps of a page."""

    def __init__(self, profile: str = "smoke", workspace: str | os.PathLike | Workspace | None = None,
                 overrides=(), device: str = "auto"):
        self.workspace = workspace if isinstance(workspace, Workspace) else find(workspace)
        self.profile = str(profile)
        self.preset = load_preset(self.profile)
        self.name = self.preset.get("profile", self.profile)  # "smoke" for smoke.yaml or a path to it
        self.overrides = tuple(overrides or ()) + ((f"device={device}",) if device and device != "auto" else ())
        self._configs: dict[Model, RunConfig] = {}
        self._detector: tuple[str, object] | None = None  # one model in memory at a time
        threads = os.environ.get("SSVP_THREADS")  # `ssvp reproduce --jobs N` shares the cores between kernels
        if threads:
            torch.set_num_threads(int(threads))
        from .notebook import NotebookBar, in_kernel, show_tables_as_the_pages_do

        if in_kernel():  # training and evaluation cells show their progress as a live line in the cell
            progress_bars.install(NotebookBar)
            show_tables_as_the_pages_do()

    def __repr__(self) -> str:
        return f"Study(profile={self.profile!r}, workspace={str(self.workspace.root)!r}, overrides={self.overrides})"

    # -- the preset ---------------------------------------------------------------------------------------------
    def section(self, key: str, default=None):
        return self.preset.get(key, default)

    @property
    def banner(self) -> str:
        return SMOKE_BANNER if self.name == "smoke" else (self.section("banner") or "")

    @property
    def main_target(self) -> str:
        """The dataset of the single-dataset tables (MVTec-AD in the paper; the held-out synthetic set in smoke)."""
        return self.section("main_target", "mvtec")

    @property
    def reports(self) -> Path:
        return self.workspace.reports / self.name

    def dataset_root(self, name: str) -> Path:
        return self.workspace.path((self.section("datasets") or {}).get(name, f"data/{name}"))

    def paper_dataset(self, name: str) -> str:
        """The paper dataset whose reported numbers stand beside `name` (the smoke profile maps its synthetic set)."""
        return (self.section("paper_alias") or {}).get(name, name)

    def protocol(self, method: str | None = None) -> dict:
        """{"source": where the mapping comes from, "rules": [{"train": [names], "eval": [names or "*"]}]} (see
        `protocol_of`)."""
        return protocol_of(self.section("protocol") or [], self.profile, method)

    def sources(self, method: str, target: str) -> list[str]:
        """The auxiliary (training) datasets behind `method`'s numbers on `target`: a rule naming the target wins over
        a wildcard rule."""
        return rule_sources(self.protocol(method)["rules"], target, self.profile, method)

    def trained_on(self, method: str, target: str) -> str:
        """What the report says produced a number: "visa", "mvtec+colondb", or "none" for training-free methods."""
        if not method_spec(method).trainable:
            return "none (training-free)"
        return "+".join(self.sources(method, target))

    @staticmethod
    def published_trained_on(method: str, dataset: str) -> str:
        """What produced `method`'s published number on the paper dataset `dataset` (reported.csv), from the paper
        preset whatever this study's profile: its paper's protocol rule (an auxiliary dataset's test split),
        "synthetic" where that protocol entry says `published_training: synthetic` (AnomalyVFM's FLUX-generated
        set), "none" for training-free methods."""
        if not method_spec(method).trainable:
            return "none (training-free)"
        spec = load_preset("paper").get("protocol") or []
        entry = protocol_of(spec, "paper", method)
        if entry["published_training"] == "synthetic":
            return "synthetic (authors' generated set)"
        return "+".join(rule_sources(entry["rules"], dataset, "paper", method))

    def targets(self) -> list[str]:
        """Every target a protocol rule names explicitly (any method), in order."""
        spec = self.section("protocol") or []
        methods = list(spec) if isinstance(spec, dict) else [None]
        names = [t for m in methods for rule in self.protocol(m)["rules"] for t in rule["eval"] if t != WILDCARD]
        return list(dict.fromkeys(names))

    def datasets(self, given=None, key: str | None = None) -> list[str]:
        """`given`, else the preset's list under `key`, else every target."""
        if given:
            return list(given)
        return list(self.section(key, self.targets()) if key else self.targets())

    # -- configurations -----------------------------------------------------------------------------------------
    def option(self, method: str, target: str, name: str):
        """The value of one of `method`'s options in this profile (its default unless the preset or the study's
        overrides set it), as the model trained for `target` runs with it."""
        options = method_spec(method).options_from(self.config(Model(method, target)).options)
        if not hasattr(options, name):
            raise ConfigError(f"{method} has no option {name!r}")
        return getattr(options, name)

    def config(self, model: Model) -> RunConfig:
        """The run configuration of a model: the protocol's training data, the target as evaluation set, the page's
        overrides, then the study's (the caller's overrides win)."""
        if model not in self._configs:
            source, *extra = self.sources(model.method, model.target)
            base = [f"train.dataset={source}", f"train.root={self._root_text(source)}",
                    f"eval.datasets=[{{name: {model.target}, root: '{self._root_text(model.target)}'}}]"]
            if extra:
                base.append("train.extra=[" + ", ".join(f"{{name: {n}, root: '{self._root_text(n)}'}}" for n in extra)
                            + "]")
            if model.seed is not None:
                base.append(f"train.seed={model.seed}")
            self._configs[model] = load_config(self.profile, model.method,
                                               base + list(model.extra) + list(self.overrides), workspace=self.workspace.root)
        return self._configs[model]

    def _root_text(self, name: str) -> str:
        """The preset's root of a dataset as written there (relative roots stay relative, so fingerprints do not
        depend on where the workspace is)."""
        return str((self.section("datasets") or {}).get(name, f"data/{name}"))

    def shared_settings(self, method: str, target: str, keys: tuple[str, ...], extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        """`key=value` overrides that copy `method`'s resolved values of `keys` (dotted config paths) onto another
        method's run (the schedule SSVP's Table 3 rows share with the Bayes-PFL baseline)."""
        resolved = self.config(Model(method, target, tuple(extra))).to_dict()
        out = []
        for key in keys:
            value = resolved
            for part in key.split("."):
                value = value[part]
            out.append(f"{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}")
        return tuple(out)

    def run_dir(self, model: Model) -> Path:
        from ..engine.train import run_dir

        return run_dir(self.config(model))

    def is_trained(self, model: Model) -> bool:
        """A complete checkpoint exists (always true for a training-free method)."""
        if not method_spec(model.method).trainable:
            return True
        from ..engine.checkpoint import CHECKPOINT_NAME, CheckpointError, load

        path = self.run_dir(model) / CHECKPOINT_NAME
        if not path.is_file():
            return False
        try:
            return bool(load(path)["state"].get("complete"))
        except CheckpointError:
            return False

    # -- step: data ---------------------------------------------------------------------------------------------
    def ensure_data(self) -> None:
        """Generate the profile's synthetic benchmark (preset `synthetic`) or its replicas of the real layouts
        (preset `replicas`) if they are not on disk yet; real datasets are the user's to bring."""
        synthetic = self.section("synthetic")
        if synthetic is not None:
            from ..synthdata import ensure_synthetic

            ensure_synthetic(self.dataset_root("synth-a").parent, **synthetic)
        replicas = self.section("replicas")
        if replicas is not None:
            from ..data.replicas import REPLICAS, ReplicaSize, ensure_replicas

            settings = dict(replicas)
            seed = settings.pop("seed", 0)
            roots = {name: self.dataset_root(name) for name in (self.section("datasets") or {}) if name in REPLICAS}
            ensure_replicas(roots, seed, ReplicaSize(**settings))

    def prepare_data(self, jobs=()) -> pd.DataFrame:
        """Make the profile's generated data, then one row per dataset the jobs read (training sets and targets):
        its role, root, classes, test images, anomalous images and masks; a missing dataset is named with the fix."""
        from ..data import read_dataset, summarize
        from ..errors import SSVPError

        self.ensure_data()
        roles: dict[str, set[str]] = {}
        for model in models_of(jobs):
            roles.setdefault(model.target, set()).add("evaluated")
            if method_spec(model.method).trainable:
                for source in self.sources(model.method, model.target):
                    roles.setdefault(source, set()).add("trains")
        rows = []
        for name, role in roles.items():
            root = self.dataset_root(name)
            row = {"dataset": name, "role": " + ".join(sorted(role, reverse=True)), "root": str(root)}
            try:
                counts = summarize(read_dataset(name, root, "test"))
                row.update(classes=len(counts), test_images=sum(c["images"] for c in counts.values()),
                           anomalous=sum(c["anomalous"] for c in counts.values()),
                           masks=sum(c["masks"] for c in counts.values()), state="ready")
            except SSVPError as e:
                row.update(state=f"missing: {e}")
            rows.append(row)
        return pd.DataFrame(rows)

    # -- step: train --------------------------------------------------------------------------------------------
    def detector(self, model: Model, progress: bool = False):
        """The trained (or training-free) detector of a model; trained at most once per configuration, reused from
        its run folder afterwards."""
        cfg = self.config(model)
        key = cfg.fingerprint() + cfg.method
        if self._detector is None or self._detector[0] != key:
            self._detector = None  # free the previous model before building the next
            if method_spec(cfg.method).trainable:
                from ..engine.train import train

                det = train(cfg, progress=progress).detector
            else:
                det = build_detector(cfg)
            self._detector = (key, det.eval())
        return self._detector[1]

    def train(self, jobs, progress: bool = True) -> pd.DataFrame:
        """Train every model the jobs need that has no complete checkpoint yet (one per configuration fingerprint),
        and say for each what was done: trained now (seconds, final loss), reused from its run folder, or nothing to
        train."""
        from ..engine.checkpoint import CHECKPOINT_NAME
        from ..engine.checkpoint import load as load_checkpoint
        from ..engine.train import run_busy, run_lock
        from ..engine.train import train as train_model

        unique: dict[str, Model] = {}
        for model in models_of(jobs):
            unique.setdefault(self.config(model).fingerprint() + model.method, model)

        def busy(model: Model) -> bool:
            return method_spec(model.method).trainable and run_busy(self.run_dir(model))

        rows = {}
        for model in progress_bars.iterate(free_first(unique.values(), busy), desc="models", disable=not progress,
                                           leave=True, total=len(unique)):
            cfg = self.config(model)
            row = {"method": model.method, "label": model.label, "trained_on": self.trained_on(model.method, model.target),
                   "epochs": cfg.train.epochs if method_spec(model.method).trainable else 0,
                   "fingerprint": cfg.fingerprint()}
            if method_spec(model.method).trainable and run_busy(self.run_dir(model)):
                with run_lock(self.run_dir(model)):  # only busy ones left: wait for the other process, then reuse
                    pass
            if not method_spec(model.method).trainable:
                row.update(status="training-free", seconds=0.0, final_loss=float("nan"))
            elif self.is_trained(model):
                history = load_checkpoint(self.run_dir(model) / CHECKPOINT_NAME)["state"]["history"]
                row.update(status="reused", seconds=0.0, final_loss=history[-1]["total"] if history else float("nan"))
            else:
                started = time.perf_counter()
                result = train_model(cfg, progress=progress)
                self._detector = (cfg.fingerprint() + cfg.method, result.detector.eval())
                row.update(status="trained", seconds=round(time.perf_counter() - started, 1),
                           final_loss=result.history[-1]["total"] if result.history else float("nan"))
            row["run_folder"] = str(self.run_dir(model))
            rows[model] = row
        frame = pd.DataFrame([rows[model] for model in unique.values()])  # in the jobs' order
        return frame if frame.label.astype(bool).any() else frame.drop(columns="label")

    # -- step: evaluate -----------------------------------------------------------------------------------------
    def _eval_path(self, job: EvalJob) -> Path:
        cfg = self.config(job.model)
        # the bootstrap settings are left out: an evaluation that holds resamples also serves callers that need none
        settings = {k: v for k, v in cfg.to_dict()["eval"].items() if k not in ("bootstrap", "bootstrap_seed")}
        settings = json.dumps({"eval": settings, "image_size": cfg.image_size, "multitype": job.multitype}, sort_keys=True)
        digest = hashlib.sha256(settings.encode()).hexdigest()[:10]
        return self.run_dir(job.model) / "eval" / f"{job.target}-{digest}.pkl"

    def _has_bootstrap(self, ev: Evaluation, job: EvalJob) -> bool:
        cfg = self.config(job.model)
        boot = ev.extra.get("bootstrap") or {}
        return boot.get("resamples") == cfg.eval.bootstrap and boot.get("seed") == cfg.eval.bootstrap_seed

    def cached_evaluation(self, job: EvalJob) -> Evaluation | None:
        """The stored evaluation of a job when it holds what the job asks for (resamples included), else None."""
        path = self._eval_path(job)
        if not path.is_file():
            return None
        with path.open("rb") as f:
            cached = pickle.load(f)
        return cached if not job.bootstrap or self._has_bootstrap(cached, job) else None

    def evaluation(self, job: EvalJob, progress: bool = False, recompute: bool = False) -> Evaluation:
        """Per-class metrics of the job's model on its target, from the cache or computed now (training the model
        first if it has no checkpoint) and stored."""
        cached = None if recompute else self.cached_evaluation(job)
        if cached is not None:
            return cached
        with io.file_lock(self._eval_lock(job)):  # a notebook beside this one computing it too: wait, then read it
            cached = None if recompute else self.cached_evaluation(job)
            return cached if cached is not None else self._compute_evaluation(job, progress, recompute)

    def _eval_lock(self, job: EvalJob) -> Path:
        return self._eval_path(job).with_suffix(".lock")

    def _compute_evaluation(self, job: EvalJob, progress: bool, recompute: bool) -> Evaluation:
        from ..engine.infer import evaluate

        cfg = self.config(job.model)
        det = self.detector(job.model, progress)
        hooks = []
        if job.multitype:
            from ..engine.multitype import multitype_hook

            hooks = [multitype_hook(det, job.target)]
        result = evaluate(det, cfg.eval.datasets[0], cfg, progress=progress, hooks=hooks, bootstrap=job.bootstrap)
        extra = {"multitype": result.extra.get("MultiTypeEvaluation")} if job.multitype else {}
        extra.update({k: result.extra[k] for k in ("bootstrap", "image_only_classes") if k in result.extra})
        out = Evaluation(result.metrics, result.samples, extra)
        path = self._eval_path(job)
        if not job.bootstrap and not recompute and path.is_file():
            return out  # another process stored it meanwhile, perhaps with resamples: keep that
        with io.atomic_path(path) as tmp:
            with tmp.open("wb") as f:
                pickle.dump(out, f)
        return out

    def evaluate(self, jobs, progress: bool = True, recompute=(),
                 metrics=("image_auroc", "pixel_auroc", "pixel_aupro_legacy")) -> pd.DataFrame:
        """Evaluate every job (a cached result is read back unless its method is listed in `recompute`, or
        `recompute` is True) and show one row per job: what was evaluated, the class means of `metrics` in %, and
        whether it was computed now or read from the run folder."""
        jobs = [j for j in dict.fromkeys(jobs) if isinstance(j, EvalJob)]
        by_job = {}
        for job in progress_bars.iterate(free_first(jobs, lambda j: io.lock_busy(self._eval_lock(j))),
                                         desc="evaluations", disable=not progress, leave=True, total=len(jobs)):
            again = recompute is True or job.method in (recompute or ())
            if not again and io.lock_busy(self._eval_lock(job)):
                with io.file_lock(self._eval_lock(job)):  # only busy ones left: wait for the other process
                    pass
            stored = None if again else self.cached_evaluation(job)
            started = time.perf_counter()
            ev = stored or self.evaluation(job, progress=progress, recompute=again)
            row = {"method": job.method, "label": job.model.label, "dataset": job.target,
                   "trained_on": self.trained_on(job.method, job.target)}
            row.update({m: 100 * ev.mean(m) for m in metrics})
            row.update(status="read from cache" if stored is not None else "computed",
                       seconds=0.0 if stored is not None else round(time.perf_counter() - started, 1))
            by_job[job] = row
        frame = pd.DataFrame([by_job[job] for job in jobs])  # in the jobs' order
        return frame if len(frame) and frame.label.astype(bool).any() else frame.drop(columns="label", errors="ignore")

    # -- samples for figures ------------------------------------------------------------------------------------
    def samples(self, target: str):
        from ..data.registry import read_dataset

        return read_dataset(target, self.dataset_root(target))

    def pick_samples(self, target: str, per_class: int = 1, classes: list[str] | None = None, seed: int = 0) -> list[int]:
        """Indices of anomalous test images: `per_class` from each class (deterministic)."""
        samples = self.samples(target)
        rng = np.random.default_rng(seed)
        picks = []
        for cls in dict.fromkeys(s.cls for s in samples):
            if classes and cls not in classes:
                continue
            idx = [i for i, s in enumerate(samples) if s.cls == cls and s.label == 1]
            picks += sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
        return picks

    def sample_outputs(self, model: Model, indices: list[int]) -> list[dict]:
        """Image, mask, smoothed map, score and aux of chosen test samples of the model's target (for figures)."""
        from ..data.loader import AnomalyDataset
        from ..engine.infer import collate, map_sigma, smooth, to_device

        cfg = self.config(model)
        det = self.detector(model)
        samples = self.samples(model.target)
        dataset = AnomalyDataset([samples[i] for i in indices], cfg.image_size, det.input_sizes())
        device = next(det.parameters()).device
        out = []
        for item, idx in zip((dataset[i] for i in range(len(dataset))), indices):
            batch = to_device(collate([item]), device)
            with torch.inference_mode():
                o = det(batch)
            amap = smooth(o.anomaly_map.float().cpu().numpy(), map_sigma(cfg))[0]
            out.append({"index": idx, "sample": samples[idx], "image": item["image"].permute(1, 2, 0).numpy(),
                        "mask": item["mask"].numpy() > 0.5, "map": amap, "score": float(o.score[0]),
                        "aux": {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in o.aux.items()
                                if k in det.eval_aux_keys}})
        return out

    def outputs_by_method(self, models: list[Model], target: str, indices: list[int]) -> dict[str, list[dict]]:
        """`sample_outputs` of the same test images for every model of `models` evaluated on `target`, by method."""
        return {m.method: self.sample_outputs(m, indices) for m in models if m.target == target}

    # -- what this run is ---------------------------------------------------------------------------------------
    def protocol_table(self, jobs) -> pd.DataFrame:
        """One row per model the jobs need: method, what it trains on and is evaluated on, epochs, batch, precision,
        image size, backbones, and whether its checkpoint is already in the workspace."""
        rows = []
        for model in models_of(jobs):
            cfg = self.config(model)
            trainable = method_spec(model.method).trainable
            spec = method_spec(model.method)
            uses = spec.cls.backbones_used(spec.options_from(cfg.options))
            b = cfg.backbone
            rows.append({"method": model.method, "label": model.label,
                         "trained on": self.trained_on(model.method, model.target), "evaluated on": model.target,
                         # a step-counted run (AnomalyVFM's train.steps) says so instead of an epoch count
                         "epochs": ((f"{cfg.train.steps} steps" if cfg.train.steps else cfg.train.epochs)
                                    if trainable else 0),
                         "batch": cfg.train.batch_size if trainable else 0,
                         "precision": b.precision, "image size": cfg.image_size,
                         "CLIP": f"{b.clip.model} ({b.clip.pretrained}) @ {b.clip.image_size}"
                         if "clip" in uses else "—",
                         "auxiliary backbone": f"{b.dino.model} ({b.dino.pretrained}) @ {b.dino.image_size}"
                         if "dino" in uses else "—",
                         "switches": " ".join(model.extra) or "—",
                         "checkpoint": ("—" if not trainable else "in the workspace" if self.is_trained(model)
                                        else "to train")})
        frame = pd.DataFrame(rows)
        return frame if len(frame) and frame.label.astype(bool).any() else frame.drop(columns="label", errors="ignore")

    def differences(self, page: str) -> list[dict]:
        """The preset's entries on what differs from the paper in this profile and why (`differences`, keyed by
        name), for one page (entries without `pages` concern every page)."""
        entries = (self.section("differences") or {}).values()
        return [d for d in entries if not d.get("pages") or page in d["pages"]]

    def page(self, name: str, out_dir: str | os.PathLike | None = None):
        from .pages import Page

        return Page(self, name, out_dir)


__all__ = ["Study", "Model", "OfModel", "EvalJob", "Evaluation", "models_of", "SMOKE_BANNER", "WILDCARD"]
