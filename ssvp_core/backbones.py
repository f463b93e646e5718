"""Frozen backbones: CLIP through open_clip and the auxiliary ViT (DINOv3, DINOv2, MAE) through timm.

CLIP (SSVP.md §2.1): `ViT-L-14-336-quickgelu` with OpenAI weights, built at 518 px (open_clip interpolates the
position embedding from 24x24 to 37x37 on load). The vision tower is run block by block so that methods can tap
the residual stream after any block and, where a method needs it (DAPO, AdaCLIP), inject tokens before a block.
Taps are projected into the joint space with ln_post then proj (Bayes-PFL's `proj_patch_tokens`, SSVP.md §11 #3).
The text tower is exposed the same way: token embeddings in, per-block hook, EOT pooling, text projection out.

Auxiliary ViT (SSVP.md §2.1): `vit_large_patch16_dinov3.lvd1689m` at 592 px (37x37), taps at 0-based blocks
[3, 6, 9, 11] with the final norm, register tokens dropped, the final normed CLS kept as the global token.

No vendored CLIP: everything goes through the libraries' modules, tiny test models included.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ClipConfig, DinoConfig
from .errors import ConfigError, WeightsError
from .weights import resolve_clip, resolve_timm

log = logging.getLogger(__name__)
RANDOM_INIT_SEED = 0  # random backbones ("none" weights) are rebuilt identically in every process
MODEL_CONFIG_DIR = Path(__file__).parent / "configs" / "models"
_registered = False


def register_tiny_models() -> None:
    """Make the tiny test CLIP (`ssvp-tiny-clip`) known to open_clip; same classes, 3.5M parameters."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def autocast_context(device: torch.device, precision: str):
    """bf16/fp16 autocast for the frozen backbones; `auto` means bf16 on GPU and fp32 on CPU."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise ConfigError(f"backbone.precision={precision!r}: choose auto, fp32, bf16 or fp16")
    return torch.autocast(device_type=device.type, dtype=dtype)


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@dataclass
class ClipImageFeatures:
    taps: list[torch.Tensor]  # raw residual stream after each tapped block, (B, 1 + N, W), CLS first
    final: torch.Tensor  # residual stream after the last block, (B, 1 + N, W)
    grid: tuple[int, int]


class ClipBackbone(nn.Module):
    """Frozen open_clip CLIP with block-level access to both towers."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        import open_clip

        register_tiny_models()
        self.cfg = cfg
        src = resolve_clip(cfg.model, cfg.pretrained)
        if (src.kind != "none" and cfg.activation == "model" and "quickgelu" not in cfg.model.lower()
                and str(cfg.pretrained).lower() == "openai"):
            warnings.warn(f"{cfg.model} with OpenAI weights: use the -quickgelu model config (OpenAI CLIP uses QuickGELU), "
                          "or set backbone.clip.activation=gelu if exact GELU is meant (as some released codes do)")
        # bicubic: open_clip resizes the position embedding while loading; bilinear: build at the weights' own size
        # and resize afterwards (resize_position_embedding)
        kwargs = dict(force_image_size=cfg.image_size if cfg.pos_embed_interpolation == "bicubic" else None)
        if cfg.activation != "model":  # model kwargs override the open_clip config (both towers)
            kwargs["quick_gelu"] = cfg.activation == "quick_gelu"
        try:
            if src.kind == "none":
                with _quiet(), _fixed_rng():
                    model = open_clip.create_model(cfg.model, pretrained=None, **kwargs)
            elif src.path is not None:
                model = open_clip.create_model(cfg.model, pretrained=str(src.path), weights_only=not src.torchscript, **kwargs)
            else:
                model = open_clip.create_model(cfg.model, pretrained=src.tag, **kwargs)
        except WeightsError:
            raise
        except RuntimeError as e:
            where = src.path or src.tag
            if "not found" in str(e).lower() and "model config" in str(e).lower():
                raise ConfigError(f"backbone.clip.model={cfg.model!r}: unknown open_clip model ({e})") from None
            raise WeightsError(f"cannot load CLIP weights from {where} into {cfg.model}: {e}. "
                               "Check that the file matches the model config (ViT-L-14-336-quickgelu for OpenAI ViT-L/14@336).") from None
        if cfg.pos_embed_interpolation != "bicubic":
            mode = "bicubic" if cfg.pos_embed_interpolation == "bicubic_no_antialias" else cfg.pos_embed_interpolation
            resize_position_embedding(model.visual, cfg.image_size, mode)
        self.model = _freeze(model)
        self.tokenizer = open_clip.get_tokenizer(cfg.model)
        visual = self.model.visual
        patch = visual.conv1.kernel_size[0]
        if cfg.image_size % patch:
            raise ConfigError(f"backbone.clip.image_size={cfg.image_size} is not a multiple of the patch size {patch}")
        self.grid = (cfg.image_size // patch, cfg.image_size // patch)
        n_blocks = len(visual.transformer.resblocks)
        bad = [l for l in cfg.layers if not 1 <= l <= n_blocks]
        if bad:
            raise ConfigError(f"backbone.clip.layers={list(cfg.layers)}: {bad} out of range 1..{n_blocks} (1-based)")
        self.tap_indices = [l - 1 for l in cfg.layers]
        mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # ---- sizes --------------------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.model.visual.conv1.out_channels

    @property
    def embed_dim(self) -> int:
        return self.model.visual.proj.shape[1]

    @property
    def text_width(self) -> int:
        return self.model.token_embedding.embedding_dim

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.visual.transformer.resblocks

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.model.transformer.resblocks

    # ---- vision -------------------------------------------------------------------------------------------
    def embed_image(self, images01: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> the token sequence entering block 0, (B, 1 + N, W)."""
        visual = self.model.visual
        x = (images01 - self.mean) / self.std
        x = visual.conv1(x.to(visual.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)

    def run_blocks(self, x: torch.Tensor, taps: list[int] | None = None,
                   hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
                   checkpointing: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the vision blocks; `hook(i, x)` may rewrite the sequence before block i. Returns (final, taps)."""
        taps = self.tap_indices if taps is None else taps
        out = []
        for i, blk in enumerate(self.blocks):
            if hook is not None:
                x = hook(i, x)
            if checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if i in taps:
                out.append(x)
        return x, out

    def image_features(self, images01: torch.Tensor, hook=None, checkpointing: bool = False) -> ClipImageFeatures:
        final, taps = self.run_blocks(self.embed_image(images01), hook=hook, checkpointing=checkpointing)
        return ClipImageFeatures(taps, final, self.grid)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """ln_post then proj: tokens of any block into the joint image-text space."""
        visual = self.model.visual
        return visual.ln_post(self._weights_dtype(tokens)) @ visual.proj

    def project_no_ln(self, tokens: torch.Tensor) -> torch.Tensor:
        """proj without ln_post (AnomalyCLIP / ViP2-CLIP's global-feature convention)."""
        return self._weights_dtype(tokens) @ self.model.visual.proj

    def _weights_dtype(self, tokens: torch.Tensor) -> torch.Tensor:
        """bf16/fp16 tokens from an autocast block projected after it (AdaCLIP, DAPO do) meet the fp32 weights in
        fp32; inside autocast the matmul is cast as usual."""
        weights = self.model.visual.proj.dtype
        if tokens.dtype != weights and not torch.is_autocast_enabled(tokens.device.type):
            return tokens.to(weights)
        return tokens

    # ---- text ---------------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.token_embedding(ids.to(self.model.token_embedding.weight.device))

    def encode_text_embeddings(self, embeds: torch.Tensor, eot_index: torch.Tensor, causal: bool = True,
                               hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Token embeddings (P, L, W) -> text features (P, D), pooled at `eot_index`; gradients flow to `embeds`."""
        x = embeds + self.model.positional_embedding[: embeds.shape[1]].to(embeds.dtype)
        for j, blk in enumerate(self.text_blocks):
            if hook is not None:
                x = hook(j, x)
            mask = None
            if causal:
                L = x.shape[1]
                mask = torch.full((L, L), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
            x = blk(x, attn_mask=mask)
        x = self.model.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot_index.to(x.device)]
        proj = self.model.text_projection
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenize(texts).to(self.mean.device)
        return self.encode_text_embeddings(self.token_embeddings(ids), ids.argmax(dim=-1))


class AuxBackbone(nn.Module):
    """Frozen timm ViT (DINOv3 by default): multi-layer patch tokens and the final CLS token."""

    def __init__(self, cfg: DinoConfig):
        super().__init__()
        import timm

        self.cfg = cfg
        src = resolve_timm(cfg.model, cfg.pretrained)
        kwargs = {"num_classes": 0, **cfg.kwargs}
        if "dinov3" not in cfg.model:
            kwargs.setdefault("img_size", cfg.image_size)
        try:
            if src.kind == "none":
                with _fixed_rng():
                    model = timm.create_model(cfg.model, pretrained=False, **kwargs)
            elif src.path is not None:
                with _quiet_stdout():
                    model = timm.create_model(cfg.model, pretrained=True, pretrained_cfg_overlay={"file": str(src.path)}, **kwargs)
            else:
                model = timm.create_model(f"{cfg.model}.{src.tag}", pretrained=True, **kwargs)
        except WeightsError:
            raise
        except RuntimeError as e:
            if "Unknown model" in str(e) or "Invalid model" in str(e):
                raise ConfigError(f"backbone.dino.model={cfg.model!r}: unknown timm model ({e})") from None
            raise WeightsError(f"cannot load {cfg.model} weights from {src.path or src.tag}: {e}. "
                               "Check that the file belongs to this architecture (Meta DINOv3 .pth and timm files both work).") from None
        self.model = _freeze(model)
        # timm ViTs and Evas patchify in `patch_embed`, NaFlexVit (SigLIP2 NaFlex) in `embeds`
        patch = (model.patch_embed if hasattr(model, "patch_embed") else model.embeds).patch_size[0]
        if cfg.image_size % patch:
            raise ConfigError(f"backbone.dino.image_size={cfg.image_size} is not a multiple of the patch size {patch} "
                              f"(use {cfg.image_size // patch * patch} or {(cfg.image_size // patch + 1) * patch})")
        self.grid = (cfg.image_size // patch, cfg.image_size // patch)
        n_blocks = len(model.blocks)
        bad = [l for l in cfg.layers if not 0 <= l < n_blocks]
        if bad:
            raise ConfigError(f"backbone.dino.layers={list(cfg.layers)}: {bad} out of range 0..{n_blocks - 1} (0-based)")
        mean = model.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))
        std = model.pretrained_cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def width(self) -> int:
        return self.model.num_features

    def forward(self, images01: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """-> ([(B, N, D) per tapped layer], final normed CLS (B, D)). Register tokens are dropped."""
        x = (images01 - self.mean) / self.std
        final, inter = self.model.forward_intermediates(
            x, indices=list(self.cfg.layers), norm=self.cfg.norm, return_prefix_tokens=True, output_fmt="NLC")
        return [patches for patches, _prefix in inter], final[:, 0]


def resize_position_embedding(visual: nn.Module, image_size: int, mode: str) -> None:
    """Resize an open_clip ViT's position embedding (CLS kept) to image_size with F.interpolate(mode,
    align_corners=False), and update the sizes the tower reports."""
    patch = visual.conv1.kernel_size[0]
    pos = visual.positional_embedding.data
    old = int(round((pos.shape[0] - 1) ** 0.5))
    new = image_size // patch
    if new != old:
        grid = pos[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(new, new), mode=mode, align_corners=False).to(pos.dtype)
        visual.positional_embedding = nn.Parameter(torch.cat([pos[:1], grid.flatten(2).transpose(1, 2)[0]]))
    visual.image_size, visual.grid_size = (image_size, image_size), (new, new)


@contextlib.contextmanager
def _fixed_rng():
    """Random initialisation from a fixed seed, without disturbing the caller's random stream: a checkpoint stores
    only the trained heads, so the same random backbone must come back in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        yield


@contextlib.contextmanager
def _quiet():
    """open_clip logs 'No pretrained weights loaded' on the root logger for deliberate random initialisation."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _quiet_stdout():
    """timm prints harmless '`q_bias` is not an nn.Parameter' lines while converting Meta DINOv3 checkpoints."""
    import io
    import sys

    saved, sys.stdout = sys.stdout, io.StringIO()
    try:
        yield
    finally:
        sys.stdout = saved


_CACHE: dict = {}


def get_clip(cfg: ClipConfig, compiled: bool = False) -> ClipBackbone:
    """Build once per configuration and process (frozen modules are never modified, so sharing is safe)."""
    key = ("clip", cfg.model, str(cfg.pretrained), cfg.image_size, tuple(cfg.layers), cfg.activation,
           cfg.pos_embed_interpolation, compiled)
    if key not in _CACHE:
        _CACHE[key] = ClipBackbone(cfg)
        if compiled:
            compile_blocks(_CACHE[key].blocks)
    return _CACHE[key]


def get_aux(cfg: DinoConfig, compiled: bool = False) -> AuxBackbone:
    key = ("aux", cfg.model, str(cfg.pretrained), cfg.image_size, tuple(cfg.layers), cfg.norm,
           tuple(sorted(cfg.kwargs.items())), compiled)
    if key not in _CACHE:
        _CACHE[key] = AuxBackbone(cfg)
        if compiled:
            compile_blocks(_CACHE[key].model.blocks)
    return _CACHE[key]


def compile_blocks(blocks: nn.ModuleList) -> None:
    """torch.compile each transformer block in place (`backbone.compile`). Blocks, not whole towers: the methods'
    per-block hooks, taps and side streams stay plain Python around them, and a compiled block still exposes its
    submodules (`blk.attn`, `blk.ln_1`) to the methods that read them."""
    for i, blk in enumerate(blocks):
        blocks[i] = torch.compile(blk)


def resample_tokens(tokens: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """(B, N, D) patch tokens on an src grid -> dst grid (bilinear); identity when the grids match."""
    if src == dst:
        return tokens
    B, N, D = tokens.shape
    x = tokens.transpose(1, 2).reshape(B, D, *src)
    x = F.interpolate(x, size=dst, mode="bilinear", align_corners=False)
    return x.flatten(2).transpose(1, 2)
