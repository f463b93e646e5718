"""Multi-type evaluation hook for `engine.infer.evaluate` (DAPO's per-object protocol).

For each object, the per-layer (1 + K)-way logits the detector returns in `aux["type_logits"]` are restricted to
[normal] + the object's candidate defect types, soft-maxed over that set per layer, summed over layers, upsampled
to the image size, and scored with `metrics.multitype.multitype_metrics`. Results: one row per object (AUROC, AP,
F1) and a per-defect-type table (each type's values averaged over the objects that have it).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch.nn.functional as F

from ..data.defects import DefectVocabulary
from ..errors import MetricUndefinedWarning
from ..metrics.multitype import multitype_metrics


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
        score_cols, labels = [], []
        for sample, mask, aux in zip(samples, masks, aux_list):
            logits = aux["type_logits"][..., columns]  # (L, N, C)
            prob = logits.softmax(-1).sum(0)  # sum over layers of the restricted softmax
            prob = prob.T.reshape(1, len(columns), *self.grid)
            up = F.interpolate(prob, size=(self.image_size,) * 2, mode="bilinear", align_corners=self.align_corners)[0]
            score_cols.append(up.reshape(len(columns), -1).T.numpy())
            label = 0
            if sample.label:
                anchor = self.vocabulary.index(sample.defect)
                label = columns.index(anchor) if anchor in columns else -1
            labels.append(np.where(mask.reshape(-1), label, 0))
        labels_arr = np.concatenate(labels)
        scores = np.concatenate(score_cols)
        keep = labels_arr >= 0  # pixels of a defect type outside the object's list are left out
        with warnings.catch_warnings():
            warnings.simplefilter("always", MetricUndefinedWarning)
            m = multitype_metrics(scores[keep], labels_arr[keep], names, where=f"object {cls!r}")
        self.rows.append({"cls": cls, "auroc": m["auroc"], "ap": m["ap"], "f1": m["f1"], "n_types": len(candidates)})
        for name, values in m["per_class"].items():
            self.per_type.setdefault(name, []).append(values)

    def result(self) -> dict:
        objects = pd.DataFrame(self.rows)
        if not objects.empty:
            mean = objects[["auroc", "ap", "f1"]].mean(numeric_only=True)
            objects = pd.concat([objects, pd.DataFrame([{"cls": "mean", **mean.to_dict(), "n_types": math.nan}])], ignore_index=True)
        types = pd.DataFrame([
            {"defect": name, **{k: float(np.nanmean([v.get(k, math.nan) for v in vals])) for k in ("auroc", "ap", "f1")},
             "n_objects": len(vals)}
            for name, vals in self.per_type.items()])
        return {"objects": objects, "types": types, "skipped": self.skipped}


def multitype_hook(detector, dataset: str) -> MultiTypeEvaluation:
    return MultiTypeEvaluation(detector.vocabulary(dataset), detector.image_size, detector.clip.grid)
