"""Devices, seeds and the torchrun environment."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=cpu or auto")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A seed for one optimisation step: resuming at step k draws exactly what an uninterrupted run drew."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2 ** 63 - 1)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a plain run is rank 0 of 1."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group once (gloo on CPU, nccl on GPU)."""
    import torch.distributed as dist

    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()
