"""Checkpoints: trainable parameters, optimiser/scheduler state, position in the run and the full config.

Frozen backbones are never stored (they are rebuilt from their weights). Files are written atomically, so an
interrupted save leaves the previous checkpoint intact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__, io
from ..config import RunConfig, from_dict
from ..errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainState:
    epoch: int = 0  # epoch in progress (0-based)
    step_in_epoch: int = 0  # batches of `epoch` already done
    global_step: int = 0
    complete: bool = False
    history: list[dict] = field(default_factory=list)


def save(path: Path, detector, optimizer, scheduler, state: TrainState, cfg: RunConfig) -> Path:
    payload = {
        "format": "ssvp-checkpoint-1",
        "ssvp_version": __version__,
        "torch_version": torch.__version__,
        "method": detector.name,
        "fingerprint": cfg.fingerprint(),
        "config": cfg.to_dict(),
        "trainable": detector.trainable_state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "state": vars(state),
    }
    return io.torch_save(payload, path)


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there. Train first (`ssvp train ...`) or pass the right --checkpoint.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e}); it may be truncated. Delete it and train again.") from None
    if not isinstance(payload, dict) or payload.get("format") != "ssvp-checkpoint-1":
        from ..methods import REGISTRY

        readers = sorted(name for name, spec in REGISTRY.items() if spec.read_released is not None)
        raise CheckpointError(f"{path}: not an ssvp checkpoint (missing format tag). An authors' released checkpoint is "
                              f"read with --method NAME for the methods that read their release's files ({', '.join(readers)})")
    return payload


def config_of(payload: dict) -> RunConfig:
    return from_dict(RunConfig, payload["config"], "checkpoint config")


def state_of(payload: dict) -> TrainState:
    return TrainState(**payload["state"])
