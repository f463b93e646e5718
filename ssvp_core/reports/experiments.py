"""Cached experiments for the notebooks: a model is trained once per configuration (the engine's run folders are
named by config fingerprint) and evaluated once per (model, dataset, evaluation settings); re-running a notebook
reuses both. Each method's own paper decides the auxiliary dataset of every target (preset `protocol`: SSVP trains
on VisA for every target but VisA, AnomalyCLIP-style papers on MVTec-AD for every target but MVTec-AD).
"""
from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import io
from ..config import RunConfig, load_config, load_preset
from ..errors import ConfigError
from ..methods import build_detector, method_spec

_DETECTORS: dict[str, object] = {}


@lru_cache(maxsize=None)
def preset(profile: str) -> dict:
    return load_preset(profile)


def dataset_root(profile: str, name: str) -> str:
    return (preset(profile).get("datasets") or {}).get(name, f"data/{name}")


WILDCARD = "*"


def protocol(profile: str, method: str | None = None) -> dict:
    """{"source": where the mapping comes from, "rules": [{"train": [names], "eval": [names or "*"]}]} for a method.

    The preset's `protocol` is either one rule list for every method (smoke) or a mapping method -> {source, rules}
    with a `default` entry (paper, rehearsal: each paper's own auxiliary data, see paper.yaml)."""
    spec = preset(profile).get("protocol") or []
    if isinstance(spec, dict):
        entry = spec.get(method) or spec.get("default")
        if entry is None:
            raise ConfigError(f"profile {profile!r} has no protocol for method {method!r} and no `default` under `protocol:`")
        source, rules = entry.get("source", ""), entry.get("rules") or []
    else:
        source, rules = "", spec
    rules = [{"train": [r["train"]] if isinstance(r["train"], str) else list(r["train"]), "eval": list(r["eval"])}
             for r in rules]
    return {"source": source, "rules": rules}


def protocol_sources(profile: str, target: str, method: str | None = None) -> list[str]:
    """The auxiliary (training) datasets behind `method`'s numbers on `target`: a rule naming the target wins over
    a wildcard rule."""
    rules = protocol(profile, method)["rules"]
    for rule in rules:
        if target in rule["eval"]:
            return rule["train"]
    for rule in rules:
        if WILDCARD in rule["eval"]:
            return rule["train"]
    raise ConfigError(f"profile {profile!r} has no protocol rule for target {target!r}"
                      f"{f' and method {method!r}' if method else ''}; add it under `protocol:`")


def protocol_source(profile: str, target: str, method: str | None = None) -> str:
    """The auxiliary dataset whose test split trains `method` for `target` (the first, when datasets are pooled)."""
    return protocol_sources(profile, target, method)[0]


def trained_on(profile: str, method: str, target: str) -> str:
    """What the report says produced a number: "visa", "mvtec+colondb", or "none" for training-free methods."""
    if not method_spec(method).trainable:
        return "none (training-free)"
    return "+".join(protocol_sources(profile, target, method))


def targets(profile: str) -> list[str]:
    """Every target a protocol rule names explicitly (any method), in order."""
    spec = preset(profile).get("protocol") or []
    methods = list(spec) if isinstance(spec, dict) else [None]
    names = [t for m in methods for rule in protocol(profile, m)["rules"] for t in rule["eval"] if t != WILDCARD]
    return list(dict.fromkeys(names))


def paper_dataset(profile: str, name: str) -> str:
    """The paper dataset whose reported numbers stand beside `name` (the smoke profile maps its synthetic set)."""
    return (preset(profile).get("paper_alias") or {}).get(name, name)


def section(profile: str, key: str, default=None):
    return preset(profile).get(key, default)


def ensure_profile_data(profile: str) -> None:
    """Generate the profile's synthetic benchmark (preset `synthetic`) or its replicas of the real layouts (preset
    `replicas`: every dataset of the preset that has one) if they are not on disk yet; real datasets are the user's
    to bring."""
    synthetic = section(profile, "synthetic")
    if synthetic is not None:
        from ..synthdata import ensure_synthetic

        ensure_synthetic(Path(dataset_root(profile, "synth-a")).parent, **synthetic)
    replicas = section(profile, "replicas")
    if replicas is not None:
        from ..data.replicas import REPLICAS, ReplicaSize, ensure_replicas

        settings = dict(replicas)
        seed = settings.pop("seed", 0)
        roots = {name: root for name, root in (section(profile, "datasets") or {}).items() if name in REPLICAS}
        ensure_replicas(roots, seed, ReplicaSize(**settings))


def run_config(profile: str, method: str, target: str, overrides: tuple[str, ...] = (), seed: int | None = None) -> RunConfig:
    source, *extra = protocol_sources(profile, target, method)
    base = [f"train.dataset={source}", f"train.root={dataset_root(profile, source)}",
            f"eval.datasets=[{{name: {target}, root: '{dataset_root(profile, target)}'}}]"]
    if extra:
        base.append("train.extra=[" + ", ".join(f"{{name: {n}, root: '{dataset_root(profile, n)}'}}" for n in extra) + "]")
    if seed is not None:
        base.append(f"train.seed={seed}")
    return load_config(profile, method, base + list(overrides))


def detector(cfg: RunConfig, progress: bool = False):
    """A trained (or training-free) detector for the config; trained at most once per configuration."""
    key = cfg.fingerprint() + cfg.method
    if key not in _DETECTORS:
        if method_spec(cfg.method).trainable:
            from ..engine.train import train

            det = train(cfg, progress=progress).detector
        else:
            det = build_detector(cfg)
        _DETECTORS.clear()  # keep one model in memory at a time
        _DETECTORS[key] = det.eval()
    return _DETECTORS[key]


@dataclass
class Evaluation:
    metrics: pd.DataFrame
    samples: pd.DataFrame
    extra: dict = field(default_factory=dict)

    def mean(self, metric: str) -> float:
        rows = self.metrics[(self.metrics.cls == "mean") & (self.metrics.metric == metric)]
        return float(rows.value.iloc[0]) if len(rows) else float("nan")


def _eval_path(cfg: RunConfig, target: str, multitype: bool) -> Path:
    from ..engine.train import run_dir

    settings = json.dumps({"eval": cfg.to_dict()["eval"], "image_size": cfg.image_size, "multitype": multitype}, sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:10]
    return run_dir(cfg) / "eval" / f"{target}-{digest}.pkl"


def evaluation(profile: str, method: str, target: str, overrides: tuple[str, ...] = (), seed: int | None = None,
               multitype: bool = False, progress: bool = False) -> Evaluation:
    """Per-class metrics of `method` on `target` (trained on the protocol's source), cached on disk."""
    from ..engine.infer import evaluate

    cfg = run_config(profile, method, target, tuple(overrides), seed)
    path = _eval_path(cfg, target, multitype)
    if path.is_file():
        with path.open("rb") as f:
            return pickle.load(f)
    det = detector(cfg, progress)
    hooks = []
    if multitype:
        from ..engine.multitype import multitype_hook

        hooks = [multitype_hook(det, target)]
    result = evaluate(det, cfg.eval.datasets[0], cfg, progress=progress, hooks=hooks)
    extra = {"multitype": result.extra.get("MultiTypeEvaluation")} if multitype else {}
    out = Evaluation(result.metrics, result.samples, extra)
    with io.atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            pickle.dump(out, f)
    return out


def sample_outputs(profile: str, method: str, target: str, indices: list[int], overrides: tuple[str, ...] = (),
                   seed: int | None = None) -> list[dict]:
    """Image, mask, smoothed map, score and aux of chosen test samples (for figures)."""
    from ..data.loader import AnomalyDataset
    from ..data.registry import read_dataset
    from ..engine.infer import collate, map_sigma, smooth, to_device

    cfg = run_config(profile, method, target, tuple(overrides), seed)
    det = detector(cfg)
    samples = read_dataset(target, dataset_root(profile, target))
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


def pick_samples(profile: str, target: str, per_class: int = 1, classes: list[str] | None = None, seed: int = 0) -> list[int]:
    """Indices of anomalous test images: `per_class` from each class (deterministic)."""
    from ..data.registry import read_dataset

    samples = read_dataset(target, dataset_root(profile, target))
    rng = np.random.default_rng(seed)
    picks = []
    for cls in dict.fromkeys(s.cls for s in samples):
        if classes and cls not in classes:
            continue
        idx = [i for i, s in enumerate(samples) if s.cls == cls and s.label == 1]
        picks += sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    return picks
