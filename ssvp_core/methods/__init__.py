"""Methods behind one Detector interface, registered by name.

    name          paper                                                  module
    ssvp          SSVP, arXiv 2601.09147                                 ssvp.py
    vip2clip      ViP2-CLIP, arXiv 2505.17692                            vip2clip.py
    dapo          DAPO, arXiv 2512.09446                                 dapo.py
    winclip       WinCLIP, CVPR 2023 (training-free)                     winclip.py
    aprilgan      APRIL-GAN, arXiv 2305.17382                            aprilgan.py
    anomalyclip   AnomalyCLIP, ICLR 2024                                 anomalyclip.py
    adaclip       AdaCLIP, ECCV 2024                                     adaclip.py
    bayes_pfl     Bayes-PFL, CVPR 2025                                   bayes_pfl.py
    visualad      VisualAD, CVPR 2026 (language-free)                    visualad.py
    anomalyvfm    AnomalyVFM, CVPR 2026 (no text; trains a VFM's adapters) anomalyvfm.py
    reference     (none: training-free pixel statistics, a floor)        reference.py
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .base import Detector, Output, options_from


@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type
    options: type
    paper: str
    train_defaults: dict = field(default_factory=dict)
    eval_defaults: dict = field(default_factory=dict)
    backbone_defaults: dict = field(default_factory=dict)  # e.g. {"clip": {"activation": "gelu"}} (its released code)
    # train defaults that depend on the auxiliary (training) dataset, merged over `train_defaults` for that
    # `train.dataset`, e.g. APRIL-GAN: {"visa": {"epochs": 15}, "mvtec": {"epochs": 3, "mosaic": 0.2}}
    train_defaults_by_dataset: dict = field(default_factory=dict)
    # reads the authors' own checkpoint file: (path: Path) -> state dict in the detector's trainable_state_dict()
    # names, raising CheckpointError (naming the file and the fix) on a wrong or corrupt file; `ssvp eval/predict
    # --checkpoint FILE` fall back to it when FILE is not an ssvp checkpoint
    read_released: Any = None

    def options_from(self, data: dict | None) -> Any:
        return options_from(self.options, data, f"{self.name} options")

    @property
    def trainable(self) -> bool:
        return bool(self.cls.trainable)


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    REGISTRY[spec.name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    key = name.lower().replace("-", "_")
    if key not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def build_detector(cfg) -> Detector:
    """The detector a RunConfig describes, on CPU (the engine moves it)."""
    import torch

    spec = method_spec(cfg.method)
    options = spec.options_from(cfg.options)
    # heads are initialised from the run's seed, whatever the caller's random state (backbone construction
    # uses its own fixed stream, so a cached backbone does not shift the heads' initialisation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        detector = spec.cls(options, cfg.backbone, cfg.image_size)
    detector.grad_checkpointing = cfg.train.grad_checkpointing
    detector.prompt_class_name = cfg.prompt_class_name
    return detector


from .reference import ReferenceOptions, ReferenceScorer  # noqa: E402
from .ssvp import SSVP, SSVPOptions  # noqa: E402

register(MethodSpec("ssvp", SSVP, SSVPOptions, "SSVP (Fu et al., arXiv 2601.09147)",
                    train_defaults={"epochs": 15, "batch_size": 8, "lr_prompt": 5e-4, "lr_head": 1e-4}))
from .vip2clip import ViP2CLIP, ViP2CLIPOptions  # noqa: E402

# ViP2-CLIP.md §7: Adam (default betas), lr 1e-3 for ICA and 1e-5 for FGP, no schedule, 10 epochs, batch 8; sigma 8;
# the released model runs in fp32 and resizes the position embedding bilinearly (VIP2CLIP.py)
register(MethodSpec("vip2clip", ViP2CLIP, ViP2CLIPOptions, "ViP2-CLIP (Yang et al., arXiv 2505.17692)",
                    train_defaults={"epochs": 10, "batch_size": 8, "lr_prompt": 1e-3, "lr_head": 1e-5, "betas": [0.9, 0.999],
                                    "schedule": "constant", "warmup_frac": 0.0},
                    eval_defaults={"sigma": 8.0},
                    backbone_defaults={"precision": "fp32", "clip": {"pos_embed_interpolation": "bilinear"}}))
from .dapo import DAPO, DAPOOptions  # noqa: E402

# DAPO.md §7: Adam(0.5, 0.999) lr 1e-3, no schedule, 5 epochs, batch 8; no smoothing of the maps; fp32 with autocast
# off (train.py); open_clip's bicubic position-embedding resize at load (force_image_size), the default
register(MethodSpec("dapo", DAPO, DAPOOptions, "DAPO (Nazer et al., arXiv 2512.09446)",
                    train_defaults={"epochs": 5, "batch_size": 8, "lr_prompt": 1e-3, "lr_head": 1e-3, "betas": [0.5, 0.999],
                                    "schedule": "constant", "warmup_frac": 0.0, "seed": 42},
                    eval_defaults={"sigma": 0.0},
                    backbone_defaults={"precision": "fp32"}))
from .adaclip import AdaCLIP, AdaCLIPOptions  # noqa: E402
from .anomalyclip import AnomalyCLIP, AnomalyCLIPOptions  # noqa: E402
from .aprilgan import APRILGAN, APRILGANOptions  # noqa: E402
from .bayes_pfl import BayesPFL, BayesPFLOptions  # noqa: E402
from .winclip import WINCLIP_BACKBONE, WinCLIP, WinCLIPOptions  # noqa: E402

_CONSTANT = {"schedule": "constant", "warmup_frac": 0.0}
# anomalib's WinCLIP: its own ViT-B/16+ at 240 px in fp32 (Lightning's default precision), no smoothing
register(MethodSpec("winclip", WinCLIP, WinCLIPOptions, "WinCLIP (Jeong et al., CVPR 2023)",
                    eval_defaults={"sigma": 0.0}, backbone_defaults={"clip": dict(WINCLIP_BACKBONE), "precision": "fp32"}))
# APRIL-GAN's train.sh / test.py: its loader builds exact GELU at 518 px and runs under fp16 autocast; Adam(0.5, 0.999)
# lr 1e-3, batch 8; 15 epochs on VisA, 3 on MVTec with the 2x2 mosaic at rate 0.2; no smoothing at test time
register(MethodSpec("aprilgan", APRILGAN, APRILGANOptions, "APRIL-GAN (Chen et al., arXiv 2305.17382)",
                    train_defaults={"epochs": 3, "batch_size": 8, "lr_head": 1e-3, **_CONSTANT},
                    train_defaults_by_dataset={"visa": {"epochs": 15}, "mvtec": {"epochs": 3, "mosaic": 0.2}},
                    eval_defaults={"sigma": 0.0},
                    backbone_defaults={"clip": {"activation": "gelu"}, "precision": "fp16"}))
# AnomalyCLIP's release: the model stays fp32 (build_model's convert_weights is commented out) and its forward
# resizes the position embedding bilinearly
register(MethodSpec("anomalyclip", AnomalyCLIP, AnomalyCLIPOptions, "AnomalyCLIP (Zhou et al., ICLR 2024)",
                    train_defaults={"epochs": 15, "batch_size": 8, "lr_prompt": 1e-3, "lr_head": 1e-3, **_CONSTANT},
                    backbone_defaults={"clip": {"pos_embed_interpolation": "bilinear"}, "precision": "fp32"}))
# AdaCLIP train.py/trainer.py: AdamW(0.5, 0.999) with its default weight decay 0.01, lr 0.01 for every parameter, no
# schedule, 5 epochs, batch 1; CLIP built with exact GELU (its model configs), forward under fp16 autocast; its MVTec-AD
# training set (dataset/mvtec.py) makes 20% of the items mosaics of four images of their class
register(MethodSpec("adaclip", AdaCLIP, AdaCLIPOptions, "AdaCLIP (Cao et al., ECCV 2024)",
                    train_defaults={"epochs": 5, "batch_size": 1, "lr_prompt": 1e-2, "lr_head": 1e-2, "optimizer": "adamw",
                                    "weight_decay": 0.01, **_CONSTANT},
                    train_defaults_by_dataset={"mvtec": {"mosaic": 0.2, "mosaic_draw": "image"}},
                    backbone_defaults={"clip": {"activation": "gelu"}, "precision": "fp16"}))
# Bayes-PFL train.sh / train.py: 30 epochs, batch 32, seed 333; prompts 1e-3, linear layers 1e-4 (flows and
# temperatures: the method's options); its CLIP uses exact GELU in both towers and runs in fp32
register(MethodSpec("bayes_pfl", BayesPFL, BayesPFLOptions, "Bayes-PFL (Qu et al., CVPR 2025)",
                    train_defaults={"epochs": 30, "batch_size": 32, "lr_prompt": 1e-3, "lr_head": 1e-4, "seed": 333},
                    eval_defaults={"sigma": 8.0, "seed": 333},
                    backbone_defaults={"clip": {"activation": "gelu"}, "precision": "fp32"}))
from .visualad import VisualAD, VisualADOptions, read_released as read_released_visualad  # noqa: E402

# VisualAD train.py / training_utils.py / scripts/CLIP.sh @8479132: AdamW(0.9, 0.999) weight decay 0.01, tokens 1e-3,
# ln_post / SAF / SCA 1e-4, the per-epoch cosine of VisualADOptions.schedule, batch 8, seed 111; 15 epochs (train.py),
# 1 on VisA and 2 on MVTec-AD (CLIP.sh); test.py smooths with sigma 4; CLIP in fp32 (the loader never converts it to
# fp16) with the position embedding resized bilinearly in the forward pass. The DINOv2 variant (no released code):
# timm's ViT-L/14 at 518 px, taps after blocks 6/12/18/24 (0-based 5/11/17/23)
register(MethodSpec("visualad", VisualAD, VisualADOptions, "VisualAD (Hou et al., CVPR 2026)",
                    train_defaults={"epochs": 15, "batch_size": 8, "lr_prompt": 1e-3, "lr_head": 1e-4, "optimizer": "adamw",
                                    "betas": [0.9, 0.999], "weight_decay": 0.01, "seed": 111, **_CONSTANT},
                    train_defaults_by_dataset={"visa": {"epochs": 1}, "mvtec": {"epochs": 2}},
                    eval_defaults={"sigma": 4.0},
                    backbone_defaults={"precision": "fp32", "clip": {"pos_embed_interpolation": "bilinear"},
                                       "dino": {"model": "vit_large_patch14_dinov2", "pretrained": "lvd142m",
                                                "image_size": 518, "layers": [5, 11, 17, 23]}},
                    read_released=read_released_visualad))
from .anomalyvfm import AnomalyVFM, AnomalyVFMOptions, read_released as anomalyvfm_released  # noqa: E402

# AnomalyVFM train.py / test.py @4da96b4: AdamW (default betas) lr 1e-4, weight decay 0.01, no schedule, batch 32
# (8 x 4 accumulation), seed 12, 500 steps for its DINOv3 (200 RADIO, 300 SigLIP2); fp32 training; the backbone
# trains (adapters), so gradients cross it: checkpointing keeps batch 32 at 768 px in memory; its own 5x5 mean filter
# instead of Gaussian smoothing; released weight files read by `read_released` (anomalyvfm_release.py)
register(MethodSpec("anomalyvfm", AnomalyVFM, AnomalyVFMOptions, "AnomalyVFM (Fučka et al., CVPR 2026)",
                    train_defaults={"steps": 500, "batch_size": 32, "lr_head": 1e-4, "optimizer": "adamw",
                                    "betas": [0.9, 0.999], "weight_decay": 0.01, "seed": 12, "grad_checkpointing": True,
                                    **_CONSTANT},
                    eval_defaults={"sigma": 0.0},
                    backbone_defaults={"dino": {"model": "vit_large_patch16_dinov3", "pretrained": "lvd1689m",
                                                "image_size": 768},
                                       "clip": {"pos_embed_interpolation": "bicubic_no_antialias"},
                                       "precision": "fp32"},
                    read_released=anomalyvfm_released))
register(MethodSpec("reference", ReferenceScorer, ReferenceOptions, "training-free pixel statistics (no paper; a floor)"))

__all__ = ["Detector", "Output", "MethodSpec", "REGISTRY", "register", "method_spec", "build_detector"]
