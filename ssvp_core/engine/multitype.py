"""Multi-type evaluation hook for `engine.infer.evaluate` (DAPO's per-object protocol, test_multi_defect.py).

For each object, the per-layer (1 + K)-way logits the detector returns in `aux["type_logits"]` (against its
multi-type anchors) are restricted to [normal] + the object's candidate defect types, soft-maxed over that set per
layer, summed over layers, upsampled bilinearly (align_corners=True, as train.py's compute_similarity_map) to the
image size, and scored with `metrics.multitype.multitype_metrics`. Every defect pixel of an anomalous image carries
the image's type; an anomalous image without a single type in the object's list (VisA images with several labels,
or labels DAPO has no type for) is left out whole, as the released meta.json leaves it out. Results: one row per
object (AUROC, AP, F1, images left out) and a per-defect-type table (each type's values averaged over the objects
that have it).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..data.defects import DefectVocabulary
from ..errors import ConfigError, MetricUndefinedWarning
from ..metrics.multitype import multitype_metrics


def object_type_scores(type_logits: torch.Tensor, columns: list[int], grid: tuple[int, int], size: int,
                       align_corners: bool = True) -> torch.Tensor:
    """type_logits (L, N, 1 + K) of one image -> (C, size, size): the softmax over the C = len(columns) classes of
    one object, per layer, summed over the layers, upsampled."""
    prob = type_logits[..., columns].float().softmax(-1).sum(0)  # (N, C)
    prob = prob.T.reshape(1, len(columns), *grid)
    return F.interpolate(prob, size=(size, size), mode="bilinear", align_corners=align_corners)[0]


class MultiTypeEvaluation:
    def __init__(self, vocabulary: DefectVocabulary, image_size: int, grid: tuple[int, int], align_corners: bool = True):
        self.vocabulary = vocabulary
        self.image_size = image_size
        self.grid = grid
        self.align_corners = align_corners
        self.rows: list[dict] = []
        self.per_type: dict[str, list[dict]] = {}
        self.skipped: list[str] = []

    def add(self, cls: str, samples, maps, masks, aux_list) -> None:
        candidates = self.vocabulary.objects.get(cls)
        if not candidates:
            self.skipped.append(cls)
            return
        columns = [0] + [self.vocabulary.anchors.index(c) + 1 for c in candidates]
        names = ["normal", *candidates]
        score_cols, labels, left_out = [], [], 0
        for sample, mask, aux in zip(samples, masks, aux_list):
            if "type_logits" not in aux:
                raise ConfigError("multi-type evaluation needs aux['type_logits'] for every image: evaluate the detector "
                                  "in eval mode (engine.infer.evaluate does) with a method that has defect anchors (dapo)")
            label = 0
            if sample.label:
                anchor = self.vocabulary.type_index(sample.defect, cls)
                if anchor is None:
                    left_out += 1
                    continue
                label = columns.index(anchor)
            up = object_type_scores(aux["type_logits"], columns, self.grid, self.image_size, self.align_corners)
            score_cols.append(up.reshape(len(columns), -1).T.numpy())
            labels.append(np.where(mask.reshape(-1), label, 0))
        if not labels:
            self.skipped.append(cls)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("always", MetricUndefinedWarning)
            m = multitype_metrics(np.concatenate(score_cols), np.concatenate(labels), names, where=f"object {cls!r}")
        self.rows.append({"cls": cls, "auroc": m["auroc"], "ap": m["ap"], "f1": m["f1"], "n_types": len(candidates),
                          "images_left_out": left_out})
        for name, values in m["per_class"].items():
            self.per_type.setdefault(name, []).append(values)

    def result(self) -> dict:
        objects = pd.DataFrame(self.rows)
        if not objects.empty:
            mean = objects[["auroc", "ap", "f1"]].mean(numeric_only=True)
            objects = pd.concat([objects, pd.DataFrame([{"cls": "mean", **mean.to_dict(), "n_types": math.nan,
                                                         "images_left_out": objects.images_left_out.sum()}])],
                                ignore_index=True)
        types = pd.DataFrame([
            {"defect": name, **{k: _mean_defined([v.get(k, math.nan) for v in vals]) for k in ("auroc", "ap", "f1")},
             "n_objects": len(vals)}
            for name, vals in self.per_type.items()])
        return {"objects": objects, "types": types, "skipped": self.skipped}


def _mean_defined(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def multitype_hook(detector, dataset: str) -> MultiTypeEvaluation:
    """The hook for `dataset` with the detector's multi-type anchors, whatever mode the detector is in (its forward
    returns the matching `type_logits` in eval mode, which `evaluate` sets)."""
    if not hasattr(detector, "multitype_vocabulary"):
        raise ConfigError(f"multi-type evaluation needs a method with defect-type anchors (dapo), not {detector.name}")
    return MultiTypeEvaluation(detector.multitype_vocabulary(dataset), detector.image_size, detector.clip.grid)
