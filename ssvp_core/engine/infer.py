"""Inference and per-class evaluation.

Samples are read in class order and metrics are computed as soon as a class is complete, so memory is bounded by
one class. Maps are upsampled by the method to the run's image size; here they are smoothed with a Gaussian
(sigma from the config; SSVP.md §11 #17) before the metrics, as every peer does at test time.
Under torchrun each rank scores an interleaved shard; rank 0 merges the shards class by class.

With `skip_unreadable` (your own `folder` datasets, data/loader.py) an image that does not decode, or whose mask does
not, is left out of the metrics and listed in `extra["unreadable"]` with the reason; a class left with no image
gets no metrics. Benchmarks are evaluated strictly: a damaged file there stops the run.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from .. import progress as progress_bars
from ..config import DatasetRef, RunConfig
from ..data.loader import AnomalyDataset
from ..data.records import Sample
from ..data.registry import read_dataset
from ..errors import DataError
from ..metrics import evaluate_class, results_frame
from ..metrics.bootstrap import bootstrap_class, resample_counts
from .batches import TEXT_FIELDS, collate, to_device  # noqa: F401  (re-exported)
from .feature_cache import shared_cache
from .runtime import DistInfo, barrier, dist_info, init_distributed, resolve_device, seed_everything


@dataclass
class EvalResult:
    metrics: pd.DataFrame  # long format: dataset, cls, method, metric, value, n_classes
    samples: pd.DataFrame  # one row per image: dataset, cls, path, label, defect, score
    maps: dict[int, np.ndarray] = field(default_factory=dict)  # sample index -> smoothed map (kept samples only)
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


REFERENCE_SIZE = 518  # the papers state smoothing sigmas for 518x518 maps


def map_sigma(cfg: RunConfig) -> float:
    """The configured sigma (papers' convention: pixels of a 518x518 map) at the run's image size."""
    return cfg.eval.sigma * cfg.image_size / REFERENCE_SIZE


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return maps
    return np.stack([ndimage.gaussian_filter(m, sigma=sigma) for m in maps]).astype(np.float32)


def _batches(detector, samples: list[Sample], cfg: RunConfig, device: torch.device, progress: bool, desc: str,
             cache=None, rows: list[int] | None = None, skip_unreadable: bool = False):
    """Batches of `samples` with the detector's output (None for a batch of unreadable files only). With a feature
    cache, `rows[i]` is sample i's row in it."""
    dataset = AnomalyDataset(samples, cfg.image_size, detector.input_sizes(), images=cache is None,
                             skip_unreadable=skip_unreadable)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False,
                                         num_workers=cfg.eval.num_workers, collate_fn=collate)
    for batch in progress_bars.iterate(loader, desc=desc, disable=not progress):
        if "index" not in batch:
            yield batch, None
            continue
        batch = to_device(batch, device)
        if cache is not None:
            batch["features"] = cache.take([rows[int(i)] for i in batch["index"]], device)
        with torch.inference_mode():
            out = detector(batch)
        yield batch, out


class _ClassBuffer:
    def __init__(self):
        self.index: list[int] = []
        self.scores: list[float] = []
        self.maps: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.labels: list[int] = []
        self.aux: list[dict] = []  # per-sample aux tensors, only when an evaluation hook needs them
        self.parts: list[dict] = []  # per-sample score parts for a detector's per-class rescoring
        self.unreadable: list[tuple[int, str]] = []  # (sample index, reason) of the images left out


def evaluate(detector, dataset: DatasetRef, cfg: RunConfig, keep_maps: int = 0, progress: bool = True,
             device: torch.device | None = None, hooks: list | None = None, bootstrap: bool = False,
             skip_unreadable: bool = False) -> EvalResult:
    """Score every test image of `dataset` and compute the per-class metrics table.

    keep_maps: keep the smoothed maps (and masks) of the first `keep_maps` anomalous and one normal image per
    class, for figures. hooks: objects with `add(cls, samples, maps, masks, outputs)` and `result() -> dict`,
    called per class (multi-type evaluation uses this). bootstrap: also the `cfg.eval.bootstrap` resampled values
    of every metric per class (extra["bootstrap"], metrics/bootstrap.py), for confidence intervals and paired tests.
    A class whose anomalous images have no masks (a `folder` dataset without masks/) gets image metrics only; its
    name is listed in extra["image_only_classes"]. skip_unreadable: leave out (and list in extra["unreadable"]) the
    images that do not decode instead of stopping; the module docstring says where this applies.
    """
    info = dist_info()
    device = device or resolve_device(cfg.device, info.local_rank)
    init_distributed(info, device)
    detector = detector.to(device).eval()
    seed_everything(cfg.eval.seed)
    samples = read_dataset(dataset.name, cfg.path(dataset.root), "test", dataset.classes or None)
    shard = [i for i in range(len(samples)) if i % info.world == info.rank]
    cache = None
    if cfg.eval.feature_cache and skip_unreadable:
        # cached features stand in for the pixels, so a file that no longer decodes would go unnoticed
        print(f"eval.feature_cache is not used on {dataset.name}: its unreadable files are left out as they are met",
              file=sys.stderr)
    elif cfg.eval.feature_cache:
        cache = shared_cache(detector, samples, cfg, device, info, progress)
    buffers: dict[str, _ClassBuffer] = {}
    wants_aux = bool(hooks)
    for_batches = _batches(detector, [samples[i] for i in shard], cfg, device, progress and info.main,
                           f"eval {detector.name} on {dataset.name}", cache, shard, skip_unreadable)
    for batch, out in for_batches:
        for pos, _, reason in batch.get("unreadable", ()):
            buffers.setdefault(samples[shard[pos]].cls, _ClassBuffer()).unreadable.append((shard[pos], reason))
        if out is None:
            continue
        maps = smooth(out.anomaly_map.float().cpu().numpy(), map_sigma(cfg))
        scores = out.score.float().cpu().numpy()
        masks = batch["mask"].cpu().numpy() > 0.5
        for j, pos in enumerate(batch["index"].tolist()):
            idx = shard[pos]
            s = samples[idx]
            buf = buffers.setdefault(s.cls, _ClassBuffer())
            buf.index.append(idx)
            buf.scores.append(float(scores[j]))
            buf.maps.append(maps[j])
            buf.masks.append(masks[j])
            buf.labels.append(s.label)
            if detector.score_part_keys:
                buf.parts.append({k: float(out.aux[k][j]) for k in detector.score_part_keys})
            if wants_aux:
                buf.aux.append({k: v[j].float().cpu() for k, v in out.aux.items()
                                if k in detector.eval_aux_keys and torch.is_tensor(v)})
    if info.enabled:
        buffers = _merge_shards(buffers, info)
        if not info.main:
            return EvalResult(pd.DataFrame(), pd.DataFrame())
    per_class, kept_maps, kept_masks, resampled, image_only, unread_classes = {}, {}, {}, {}, [], []
    bootstrap_seconds = 0.0
    rows = []
    unreadable = sorted((i, reason) for buf in buffers.values() for i, reason in buf.unreadable)
    if len(unreadable) == len(samples):
        shown = "; ".join(f"{samples[i].image} ({reason})" for i, reason in unreadable[:5])
        raise DataError(f"dataset {dataset.name!r} at {dataset.root}: none of its {len(samples)} images could be read "
                        f"({shown}{' ...' if len(unreadable) > 5 else ''}). Replace them with intact copies.")
    for cls in dict.fromkeys(s.cls for s in samples):
        buf = buffers.pop(cls)
        if not buf.index:  # every image of the class was unreadable: no metrics, the images are listed
            unread_classes.append(cls)
            continue
        order = np.argsort(buf.index)
        idxs = [buf.index[i] for i in order]
        scores = np.array([buf.scores[i] for i in order], dtype=np.float64)
        if buf.parts:
            rescored = detector.class_scores({k: np.array([buf.parts[i][k] for i in order]) for k in detector.score_part_keys})
            scores = scores if rescored is None else np.asarray(rescored, dtype=np.float64)
        labels = np.array([buf.labels[i] for i in order])
        maps = np.stack([buf.maps[i] for i in order])
        masks = np.stack([buf.masks[i] for i in order])
        has_masks = all(samples[i].mask is not None for i, label in zip(idxs, labels) if label == 1)
        if not has_masks:
            image_only.append(cls)
        pixel_data = (maps, masks) if has_masks else (None, None)
        per_class[cls] = evaluate_class(scores, labels, *pixel_data, cfg.eval.fpr_limit, tuple(cfg.eval.aupro), cls=cls)
        if bootstrap and cfg.eval.bootstrap > 0:
            started = time.perf_counter()
            weights = resample_counts(labels, cfg.eval.bootstrap, cfg.eval.bootstrap_seed, f"{dataset.name}/{cls}")
            resampled[cls] = bootstrap_class(scores, labels, *pixel_data, weights, cfg.eval.fpr_limit,
                                             tuple(cfg.eval.aupro), device=device)
            bootstrap_seconds += time.perf_counter() - started
        for h in hooks or []:
            h.add(cls, [samples[i] for i in idxs], maps, masks, [buf.aux[i] for i in order] if buf.aux else [{}] * len(idxs))
        kept = [i for i, l in zip(range(len(idxs)), labels) if l == 1][:keep_maps]
        kept += [i for i, l in zip(range(len(idxs)), labels) if l == 0][: 1 if keep_maps else 0]
        for k in kept:
            kept_maps[idxs[k]] = maps[k].astype(np.float16)
            kept_masks[idxs[k]] = masks[k]
        for i, sc in zip(idxs, scores):
            s = samples[i]
            rows.append((dataset.name, s.cls, str(s.image), s.label, s.defect, sc, i))
    frame = results_frame(per_class, dataset.name, detector.name)
    sample_frame = pd.DataFrame(rows, columns=["dataset", "cls", "path", "label", "defect", "score", "index"])
    extra = {type(h).__name__: h.result() for h in hooks or []}
    extra["image_only_classes"] = image_only
    extra["unreadable"] = [{"dataset": dataset.name, "cls": samples[i].cls, "file": str(samples[i].image),
                            "label": samples[i].label, "reason": reason} for i, reason in unreadable]
    extra["unreadable_classes"] = unread_classes
    if resampled:
        extra["bootstrap"] = {"resamples": cfg.eval.bootstrap, "seed": cfg.eval.bootstrap_seed, "classes": resampled,
                              "seconds": bootstrap_seconds}
    return EvalResult(frame, sample_frame, kept_maps, kept_masks, extra)


def _merge_shards(buffers: dict[str, _ClassBuffer], info: DistInfo) -> dict[str, _ClassBuffer]:
    """Gather every rank's per-class buffers on rank 0 through files in a shared temp folder."""
    import torch.distributed as dist

    folder = [tempfile.mkdtemp(prefix="ssvp-eval-") if info.main else None]
    dist.broadcast_object_list(folder, src=0)
    path = Path(folder[0])
    torch.save({c: vars(b) for c, b in buffers.items()}, path / f"shard{info.rank}.pt")
    barrier(info)
    merged: dict[str, _ClassBuffer] = {}
    if info.main:
        for r in range(info.world):
            part = torch.load(path / f"shard{r}.pt", weights_only=False)
            for cls, fields_ in part.items():
                buf = merged.setdefault(cls, _ClassBuffer())
                for name, values in fields_.items():
                    getattr(buf, name).extend(values)
    barrier(info)
    if info.main:
        shutil.rmtree(path, ignore_errors=True)
    return merged
