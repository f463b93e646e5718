"""Batches: collating dataset items (tensors stacked, text fields kept as lists) and moving them to a device."""
from __future__ import annotations

import torch

TEXT_FIELDS = ("cls", "defect", "dataset")


def collate(items: list[dict]) -> dict:
    """Stack the items; those a tolerant dataset could not read (data/loader.py) go to batch["unreadable"] as
    (index, file, reason), and a batch of nothing but those has no "index"."""
    unreadable = [(it["index"], it["file"], it["unreadable"]) for it in items if "unreadable" in it]
    items = [it for it in items if "unreadable" not in it]
    batch = {}
    if items:
        batch = torch.utils.data.default_collate([{k: v for k, v in it.items() if k not in TEXT_FIELDS} for it in items])
        for k in TEXT_FIELDS:
            batch[k] = [it[k] for it in items]
    if unreadable:
        batch["unreadable"] = unreadable
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = {kk: vv.to(device, non_blocking=True) for kk, vv in v.items()}
        else:
            out[k] = v
    return out
