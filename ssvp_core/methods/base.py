"""The Detector interface every method implements, and the pieces all of them share."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import get_clip
from ..config import BackboneConfig, TrainConfig, check_choices
from ..data.registry import prompt_name


@dataclass
class Output:
    """What a detector returns for a batch.

    anomaly_map: (B, H, W) pixel scores at the run's image size, before test-time smoothing (the engine smooths).
    score: (B,) image anomaly scores.
    aux: whatever the method's loss or the figures need (per-layer maps, prompt embeddings, ...).
    """

    anomaly_map: torch.Tensor
    score: torch.Tensor
    aux: dict[str, Any] = field(default_factory=dict)


class Detector(nn.Module):
    """A zero-shot anomaly detector: frozen backbones plus (optionally) trainable heads.

    Subclasses set `name`, `Options` (a dataclass of method options; every ambiguity of the paper is a field whose
    default is the recommended choice), and implement `forward(batch) -> Output` and, if trainable,
    `loss(output, batch) -> {"total": ..., parts...}`. Every trainable module must run inside `forward` (the loss
    only combines tensors from `Output.aux`), which DistributedDataParallel requires.
    """

    name: ClassVar[str] = "detector"
    trainable: ClassVar[bool] = True
    # which frozen backbones of `BackboneConfig` the method builds ("clip", "dino"), for the reports' protocol tables
    uses_backbones: ClassVar[tuple[str, ...]] = ()
    prompt_class_name: str = ""  # RunConfig.prompt_class_name: one name for every class ("" = the dataset's names)

    def __init__(self, options: Any, backbone: BackboneConfig, image_size: int):
        super().__init__()
        self.options = check_choices(options, f"{self.name} options") if dataclasses.is_dataclass(options) else options
        self.backbone_cfg = backbone
        self.image_size = int(image_size)

    def class_names(self, batch: dict) -> list[str]:
        """The product names put into text prompts for each image of the batch."""
        if self.prompt_class_name:
            return [self.prompt_class_name] * len(batch["cls"])
        return [prompt_name(c) for c in batch["cls"]]

    # --- data needs -----------------------------------------------------------------------------------------
    def input_sizes(self) -> list[int]:
        """Image sizes the loader must provide (besides the run's image size)."""
        return []

    # --- training -------------------------------------------------------------------------------------------
    def loss(self, output: Output, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{self.name} is training-free")

    def prompt_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the prompt learning rate (learnable token embeddings)."""
        return []

    def temperature_parameters(self) -> list[nn.Parameter]:
        return []

    def param_groups(self, train: TrainConfig) -> list[dict]:
        prompt_ids = {id(p) for p in self.prompt_parameters()}
        temp_ids = {id(p) for p in self.temperature_parameters()}
        prompts = [p for p in self.parameters() if p.requires_grad and id(p) in prompt_ids]
        temps = [p for p in self.parameters() if p.requires_grad and id(p) in temp_ids]
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in prompt_ids | temp_ids]
        groups = [{"params": prompts, "lr": train.lr_prompt, "name": "prompts"},
                  {"params": rest, "lr": train.lr_head, "name": "heads"},
                  {"params": temps, "lr": getattr(self.options, "lr_temperature", train.lr_head), "name": "temperature"}]
        return [g for g in groups if g["params"]]

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before each epoch (0-based), also when resuming; methods with a staged schedule
        (Bayes-PFL's stage 2) switch here. Default: nothing."""

    @classmethod
    def backbones_used(cls, options: Any) -> tuple[str, ...]:
        """The backbones a run with `options` builds: `uses_backbones`, unless the options choose (VisualAD's
        `backbone`, AnomalyVFM's `vfm`)."""
        return cls.uses_backbones

    def before_optimizer_step(self) -> None:
        """Called by the trainer between the backward pass (and train.grad_clip) and the optimiser step; a method
        whose release treats some gradients on their own (VisualAD clips each token's) does it here. Default: nothing."""

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: the frozen backbones are rebuilt from their weights, never stored."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items() if k in names}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.trainable_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            from ..errors import CheckpointError

            raise CheckpointError(f"checkpoint does not match {self.name}: missing {missing[:5]}, unexpected {unexpected[:5]}. "
                                  "It was trained with another method or options.")
        self.load_state_dict(state, strict=False)

    def count_parameters(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable}

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()
        return self

    def frozen_modules(self) -> list[nn.Module]:
        return []

    # --- frozen features (engine/feature_cache.py) ------------------------------------------------------------
    # A method whose vision path has no learnable part and no augmentation sets `cacheable = True` and implements
    # `frozen_features` (what its frozen backbones give per image) and `heads` (everything after them); `forward`
    # then takes the features from `batch["features"]` when a cache supplies them, and computes them otherwise.
    cacheable: ClassVar[bool] = False

    def frozen_features(self, batch: dict) -> dict[str, torch.Tensor]:
        """{name: (B, ...)} tensors from the frozen backbones only, the same whatever the trainable parts hold."""
        raise NotImplementedError(f"{self.name} does not split off its frozen features")

    def heads(self, features: dict[str, torch.Tensor], batch: dict) -> Output:
        raise NotImplementedError(f"{self.name} does not split off its frozen features")

    def feature_spec(self) -> dict:
        """Method options that change `frozen_features` (part of the cache key, beside the backbone config)."""
        return {}

    def forward(self, batch: dict) -> Output:
        features = batch.get("features")
        return self.heads(self.frozen_features(batch) if features is None else features, batch)

    # --- evaluation ------------------------------------------------------------------------------------------
    score_part_keys: ClassVar[tuple[str, ...]] = ()
    eval_aux_keys: ClassVar[tuple[str, ...]] = ()  # Output.aux entries evaluation keeps per image (hooks, figures)

    def class_scores(self, parts: dict):
        """Optional per-class rescoring from the `score_part_keys` of every image of a class (e.g. Bayes-PFL's
        per-class min-max); None keeps the per-image scores."""
        return None


def upsample(maps: torch.Tensor, size: int, align_corners: bool = True) -> torch.Tensor:
    """(B, h, w) or (B, C, h, w) -> size x size, bilinear (Bayes-PFL / DAPO use align_corners=True)."""
    squeeze = maps.dim() == 3
    x = maps.unsqueeze(1) if squeeze else maps
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=align_corners)
    return x.squeeze(1) if squeeze else x


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) -> (B, C, h, w)."""
    B, N, C = tokens.shape
    return tokens.transpose(1, 2).reshape(B, C, *grid)


class ClipDetector(Detector):
    """A detector on the frozen CLIP alone: ViP2-CLIP, DAPO and the Table-1 peers (SSVP adds the auxiliary backbone)."""

    uses_backbones: ClassVar[tuple[str, ...]] = ("clip",)

    def __init__(self, options: Any, backbone: BackboneConfig, image_size: int):
        super().__init__(options, backbone, image_size)
        self.clip = get_clip(backbone.clip, backbone.compile)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.clip]

    def input_sizes(self) -> list[int]:
        return [self.backbone_cfg.clip.image_size]


def options_from(cls, data: dict | None, where: str):
    from ..config import from_dict

    return from_dict(cls, data or {}, where)


def options_dict(options) -> dict:
    return dataclasses.asdict(options)
