"""VisualAD (Hou et al., CVPR 2026, arXiv 2603.07952): language-free zero-shot anomaly detection with two learnable
tokens inside a frozen ViT, as released in 7HHHHH/VisualAD @8479132 (its code is that of @02767eb):
`VisualAD_lib/VisualAD.py`, `build_model.py`, `utils/spatial_cross_attention.py` (SCA), `utils/feature_transform.py`
(SAF, the "mlp" transform), `train.py`, `test.py`, `utils/training_utils.py`, `utils/loss.py`, `utils/scoring.py`,
`scripts/CLIP.sh`.

    tokens    an anomaly and a normal token (width W, drawn N(0, (0.1 / sqrt(W))^2)) enter the frozen ViT before the
              CLS token: z0 = ln_pre([t_a + p_cls, t_n + p_cls, cls + p_cls, patches + p]); their position embedding is
              the CLS one, frozen (build_model.py copies it; train.py trains only the tokens and ln_post). Every block
              runs; the taps after blocks 6/12/18/24 and the two tokens of the last block go through ln_post (no proj).
    SCA       per tapped layer (paper: Spatial-Aware Cross-Attention): 4 learnable anchor queries attend over the
              layer's patches, q = LN(W_q a), k = LN(W_k (p + e[:N])), v = W_v p with 1536 learnable positions e,
              softmax(q k^T / sqrt(W)); each token gates the anchors, sigmoid(Linear(t)), and becomes
              t' = t + s * out(sum_a gate_a agg_a) with a learnable s (0.01 at the start). Dropout 0.1 on the
              attention weights and on out(...). One module per layer, applied to both tokens.
    SAF       per tapped layer (Self-Alignment Function): Linear(W, W) - GELU (exact) - Dropout 0.1 - Linear(W, W) -
              Dropout 0.1 on the ln_post patch tokens (applied to the whole sequence, then sliced, as released).
    maps      per layer: cos(SAF(p), t_a') - cos(SAF(p), t_n') on the grid, bilinear to the image size
              (align_corners=False); the map is their sum over layers (the engine smooths it, sigma 4).
    score     test.py: the mean of the top 1% pixels of the *smoothed* summed map (Gaussian, sigma 4 at 518 px; here
              `score_sigma`, scaled to the image size as the engine scales eval.sigma, with scipy's reflect borders).
    loss      sum over layers of focal([1 - s_l, s_l], mask) + dice(s_l, mask), s_l = sigmoid(map_l);
              BCE-with-logits(top-1% mean of the unsmoothed summed map, label); max(0, cos(t_a', t_n') + 0.5) on
              the last layer's tokens. Total = their sum.
    training  AdamW(0.9, 0.999), weight decay 0.01; tokens at 1e-3 (lr_prompt), ln_post, SAF and SCA at 1e-4
              (lr_head); CosineAnnealingLR(T_max=epochs, eta_min=0.1 x 1e-3) stepped once per epoch, one absolute
              floor for every group, so the 1e-4 groups stay constant; each token's gradient clipped to norm 1;
              batch 8, seed 111; 1 epoch on VisA, 2 on MVTec-AD (scripts/CLIP.sh), 15 elsewhere (train.py).
    test      test.py restores the tokens, SAF and SCA from the checkpoint but not ln_post, which train.py trains and
              saves: the published numbers use the pretrained ln_post (`test_ln_post=pretrained`; `trained` is the
              other reading).

Backbones: CLIP ViT-L/14@336 in fp32 (the loader copies OpenAI's fp16 weights into an fp32 model and never converts
it), QuickGELU, the position embedding resized bilinearly in the forward pass (MethodSpec.backbone_defaults). The
release has no DINOv2 code although its README reports DINOv2 numbers: `backbone=dinov2` builds the same method on
timm's DINOv2 ViT-L/14 at 518 px (backbone.dino; taps after blocks 6/12/18/24, its final norm in ln_post's place,
its own mean/std), the kit's construction, not the authors'.
The token path runs through the frozen backbone, so nothing is cacheable; `train.grad_checkpointing` recomputes block
activations in the backward pass.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context, get_aux, get_clip
from ..config import TrainConfig
from ..data.loader import batch_view
from ..errors import CheckpointError, ConfigError
from .base import Detector, Output, upsample
from .losses import dice, multiclass_focal

log = logging.getLogger(__name__)
REFERENCE_SIZE = 518  # score_sigma is in pixels of a 518x518 map, like eval.sigma


@dataclass
class VisualADOptions:
    backbone: Literal["clip", "dinov2"] = "clip"  # clip (released) | dinov2 (the README's numbers; no released code)
    sca: bool = True  # test.py runs without SCA when a checkpoint has none
    anchors: int = 4  # num_anchors (train.py)
    max_patches: int = 1536  # SCA's learnable positions (spatial_cross_attention.py default)
    dropout: float = 0.1  # SCA and SAF
    res_scale_init: float = 0.01
    saf_hidden_ratio: float = 1.0  # SAF hidden width = int(W * ratio) (setup_feature_transforms)
    margin: float = 0.5  # contrastive margin (ContrastiveLoss(margin=0.5))
    topk_ratio: float = 0.01  # DEFAULT_TOPK_RATIO
    score_sigma: float = 4.0  # test.py --sigma 4, before the top-k; keep equal to eval.sigma
    train_ln_post: bool = True  # train.py trains ln_post at lr_head
    test_ln_post: Literal["pretrained", "trained"] = "pretrained"  # test.py does not restore the trained ln_post
    token_grad_clip: float = 1.0  # validate_gradients: clip_grad_norm_ per token; 0 = off
    schedule: Literal["released", "engine"] = "released"  # released: per-epoch cosine to 0.1 x lr_prompt | engine: train.schedule
    min_lr_ratio: float = 0.1  # eta_min = min_lr_ratio x lr_prompt (train.py)


class SpatialCrossAttention(nn.Module):
    """SCA for one layer: anchors attend over the patches; each token gates the anchors and adds a scaled residual."""

    def __init__(self, width: int, anchors: int, max_patches: int, dropout: float, res_scale_init: float):
        super().__init__()
        self.anchors = nn.Parameter(torch.randn(anchors, width) * 0.02)
        self.positions = nn.Parameter(torch.randn(1, max_patches, width) * 0.02)
        self.q = nn.Linear(width, width, bias=False)
        self.k = nn.Linear(width, width, bias=False)
        self.v = nn.Linear(width, width, bias=False)
        self.q_norm = nn.LayerNorm(width)
        self.k_norm = nn.LayerNorm(width)
        self.gate = nn.Linear(width, anchors)
        self.out = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        self.res_scale = nn.Parameter(torch.full((1,), float(res_scale_init)))
        for lin in (self.q, self.k, self.v, self.out):
            nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: list[torch.Tensor], patches: torch.Tensor) -> list[torch.Tensor]:
        """tokens: [(B, W)] (anomaly, normal); patches (B, N, W) -> the enhanced tokens. The attention weights do not
        depend on the token, so they are computed once; dropout is drawn per token, in the release's order."""
        n = patches.shape[1]
        q = self.q_norm(self.q(self.anchors))  # (A, W)
        k = self.k_norm(self.k(patches + self.positions[:, :n]))  # (B, N, W)
        v = self.v(patches)
        attn = torch.softmax(q @ k.transpose(1, 2) * patches.shape[-1] ** -0.5, dim=-1)  # (B, A, N)
        out = []
        for t in tokens:
            agg = self.dropout(attn) @ v  # (B, A, W)
            gate = torch.sigmoid(self.gate(t)).unsqueeze(-1)
            out.append(t + self.res_scale * self.dropout(self.out((agg * gate).sum(1))))
        return out


def self_alignment(width: int, hidden: int, dropout: float) -> nn.Sequential:
    """SAF for one layer: Linear - GELU - Dropout - Linear - Dropout, Xavier-uniform weights, zero biases."""
    saf = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width), nn.Dropout(dropout))
    for lin in (saf[0], saf[3]):
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
    return saf


def topk_mean(maps: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, H, W) -> (B,): mean of the ceil(ratio * H * W) largest values (utils/scoring.py, topk_mean)."""
    flat = maps.flatten(1)
    k = max(1, int(math.ceil(flat.shape[1] * ratio)))
    return flat.topk(k, dim=1).values.mean(1)


def gaussian_filter(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter on each (H, W) map of (B, H, W): kernel radius int(truncate * sigma + 0.5),
    'reflect' borders (the edge sample repeated: d c b a | a b c d | d c b a)."""
    if sigma <= 0:
        return maps
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    out = maps
    for dim in (1, 2):
        n = out.shape[dim]
        idx = torch.arange(-radius, n + radius, device=maps.device) % (2 * n)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
        padded = out.index_select(dim, idx)  # (B, n + 2r, W) or (B, H, n + 2r)
        windows = padded.unfold(dim, 2 * radius + 1, 1)  # (..., n, 2r + 1)
        out = windows @ kernel
    return out


class VisualAD(Detector):
    name = "visualad"
    cacheable = False  # the tokens attend to the patches inside the frozen ViT: no feature is independent of them

    @classmethod
    def backbones_used(cls, options) -> tuple[str, ...]:
        return ("clip",) if options.backbone == "clip" else ("dino",)

    def __init__(self, options: VisualADOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = self.options
        if o.backbone == "clip":
            self.clip, self.aux = get_clip(backbone.clip, backbone.compile), None
            visual = self.clip.model.visual
            width, frozen_norm = self.clip.width, visual.ln_post
            self.grid, self.taps = self.clip.grid, list(self.clip.tap_indices)
            self.prefix = 3  # anomaly, normal, CLS
        else:
            self.clip, self.aux = None, get_aux(backbone.dino, backbone.compile)
            model = self.aux.model
            if getattr(model, "pos_embed", None) is None or not hasattr(model, "_pos_embed"):
                raise ConfigError(f"visualad backbone=dinov2 needs a timm ViT with an absolute position embedding "
                                  f"(a DINOv2 model); backbone.dino.model={backbone.dino.model!r} has none")
            width, frozen_norm = self.aux.width, model.norm
            self.grid, self.taps = self.aux.grid, list(backbone.dino.layers)
            self.prefix = 2 + model.num_prefix_tokens
        n_patches = self.grid[0] * self.grid[1]
        if o.sca and n_patches > o.max_patches:
            raise ConfigError(f"visualad: a {self.grid[0]}x{self.grid[1]} grid has {n_patches} patches, more than "
                              f"options.max_patches={o.max_patches} SCA positions; raise options.max_patches")
        scale = width ** -0.5
        self.anomaly_token = nn.Parameter(scale * torch.randn(width) * 0.1)
        self.normal_token = nn.Parameter(scale * torch.randn(width) * 0.1)
        self.ln_post = copy.deepcopy(frozen_norm).requires_grad_(o.train_ln_post)
        self.saf = nn.ModuleList(self_alignment(width, int(width * o.saf_hidden_ratio), o.dropout) for _ in self.taps)
        self.sca = nn.ModuleList(SpatialCrossAttention(width, o.anchors, o.max_patches, o.dropout, o.res_scale_init)
                                 for _ in self.taps) if o.sca else None

    # ---- the Detector interface ------------------------------------------------------------------------------------
    def frozen_modules(self) -> list[nn.Module]:
        return [m for m in (self.clip, self.aux) if m is not None]

    def input_sizes(self) -> list[int]:
        return [self.backbone_cfg.clip.image_size if self.clip is not None else self.backbone_cfg.dino.image_size]

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [self.anomaly_token, self.normal_token]

    def param_groups(self, train: TrainConfig) -> list[dict]:
        """Tokens at lr_prompt, everything else at lr_head; `schedule=released` marks every group for the per-epoch
        cosine down to one absolute floor, min_lr_ratio x lr_prompt (train.py's CosineAnnealingLR)."""
        groups = super().param_groups(train)
        if self.options.schedule == "released":
            for g in groups:
                g.update(schedule="epoch_cosine", min_lr=self.options.min_lr_ratio * train.lr_prompt)
        return groups

    def before_optimizer_step(self) -> None:
        """validate_gradients: each token's gradient clipped to norm token_grad_clip on its own."""
        if self.options.token_grad_clip > 0:
            for token in (self.anomaly_token, self.normal_token):
                if token.grad is not None:
                    torch.nn.utils.clip_grad_norm_([token], self.options.token_grad_clip)

    # ---- the vision path -------------------------------------------------------------------------------------------
    def _token_pair(self) -> torch.Tensor:
        return torch.stack([self.anomaly_token, self.normal_token])  # (2, W)

    def _clip_stream(self, images01: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        clip = self.clip
        visual = clip.model.visual
        x = clip.embed_image(images01)  # ln_pre([CLS, patches] + positions)
        # ln_pre acts per token, so the two tokens (with the CLS position) are normalised on their own and prepended
        tokens = visual.ln_pre((self._token_pair() + visual.positional_embedding[0]).to(x.dtype))
        x = torch.cat([tokens.unsqueeze(0).expand(x.shape[0], -1, -1), x], dim=1)
        return clip.run_blocks(x, checkpointing=getattr(self, "grad_checkpointing", False) and self.training)

    def _dino_stream(self, images01: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        aux = self.aux
        model = aux.model
        x = model.patch_embed((images01 - aux.mean) / aux.std)
        x = model.patch_drop(model._pos_embed(x))  # [prefix tokens, patches] + positions
        cls_pos = model.pos_embed[0, 0] if model.cls_token is not None and not model.no_embed_class else 0.0
        tokens = (self._token_pair() + cls_pos).to(x.dtype)
        x = model.norm_pre(torch.cat([tokens.unsqueeze(0).expand(x.shape[0], -1, -1), x], dim=1))
        taps = []
        checkpointing = getattr(self, "grad_checkpointing", False) and self.training and torch.is_grad_enabled()
        for i, blk in enumerate(model.blocks):
            x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False) if checkpointing else blk(x)
            if i in self.taps:
                taps.append(x)
        return x, taps

    def _norm(self) -> nn.Module:
        """ln_post of the token path: the trainable copy in training, and at test as `test_ln_post` says."""
        if self.training or self.options.test_ln_post == "trained":
            return self.ln_post
        return self.clip.model.visual.ln_post if self.clip is not None else self.aux.model.norm

    def forward(self, batch: dict) -> Output:
        o = self.options
        x = batch_view(batch, self.input_sizes()[0])
        with autocast_context(x.device, self.backbone_cfg.precision):
            final, taps = self._clip_stream(x) if self.clip is not None else self._dino_stream(x)
        norm = self._norm()
        tokens = [norm(final[:, 0].float()), norm(final[:, 1].float())]
        sequences = [norm(t.float()) for t in taps]  # every token of the tapped layers, as released
        starts = self.prefix
        if self.sca is not None:
            enhanced = [sca(tokens, seq[:, starts:]) for sca, seq in zip(self.sca, sequences)]
        else:
            enhanced = [tokens] * len(sequences)
        layer_maps = []
        for saf, seq, (anomaly, normal) in zip(self.saf, sequences, enhanced):
            patches = F.normalize(saf(seq)[:, starts:], dim=-1, eps=1e-8)
            difference = (patches @ F.normalize(anomaly, dim=-1, eps=1e-8).unsqueeze(-1)
                          - patches @ F.normalize(normal, dim=-1, eps=1e-8).unsqueeze(-1))[..., 0]  # (B, N)
            grid = difference.reshape(difference.shape[0], *self.grid)
            layer_maps.append(upsample(grid, self.image_size, align_corners=False))
        anomaly_map = torch.stack(layer_maps).sum(0)
        sigma = o.score_sigma * self.image_size / REFERENCE_SIZE
        score = topk_mean(gaussian_filter(anomaly_map, sigma), o.topk_ratio)
        aux = {"layer_maps": layer_maps, "image_logit": topk_mean(anomaly_map, o.topk_ratio),
               "tokens": enhanced[-1]}
        return Output(anomaly_map, score, aux)

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        mask = (batch["mask"] > 0.5).float()
        local = 0
        for m in out.aux["layer_maps"]:
            s = torch.sigmoid(m)
            local = local + multiclass_focal(torch.stack([1 - s, s], 1), mask) + dice(s, mask)
        image = F.binary_cross_entropy_with_logits(out.aux["image_logit"], batch["label"].float())
        anomaly, normal = out.aux["tokens"]
        similarity = F.cosine_similarity(F.normalize(anomaly, dim=1, eps=1e-8), F.normalize(normal, dim=1, eps=1e-8), dim=1)
        contrast = torch.clamp(similarity + self.options.margin, min=0).mean()
        return {"local": local, "image": image, "contrast": contrast, "total": image + contrast + local}


# ---- the authors' checkpoint files ---------------------------------------------------------------------------------
RELEASED_DEFAULTS = {"backbone": "ViT-L/14@336px", "image_size": 518, "features_list": [6, 12, 18, 24]}
_SCA_NAMES = {"anchor_queries": "anchors", "pos_encoding": "positions", "res_scale": "res_scale",
              "q_proj.weight": "q.weight", "k_proj.weight": "k.weight", "v_proj.weight": "v.weight",
              "q_norm.weight": "q_norm.weight", "q_norm.bias": "q_norm.bias", "k_norm.weight": "k_norm.weight",
              "k_norm.bias": "k_norm.bias", "gate.0.weight": "gate.weight", "gate.0.bias": "gate.bias",
              "out_proj.weight": "out.weight", "out_proj.bias": "out.bias"}
_SAF_NAMES = {"mlp.0.weight": "0.weight", "mlp.0.bias": "0.bias", "mlp.3.weight": "3.weight", "mlp.3.bias": "3.bias"}


def read_released(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint written by the release's `save_checkpoint` (utils/training_utils.py), e.g. its
    `weight/train_on_{visa,mvtec}/CLIP.pth`, as a state dict in `VisualAD.trainable_state_dict()` names. Layer
    modules are numbered by their position in the file's `features_list`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file. Pass the released VisualAD checkpoint "
                              "(weight/train_on_visa/CLIP.pth or weight/train_on_mvtec/CLIP.pth of 7HHHHH/VisualAD).")
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{path} is a Git LFS pointer, not the weights: run `git lfs pull` in the VisualAD "
                              "clone (or download the file from the repository's web page).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read it as a VisualAD checkpoint ({e}); it may be truncated. "
                              "Download it again.") from None
    needed = ("anomaly_token", "normal_token", "ln_post_weight", "ln_post_bias", "features_list", "layer_transforms")
    missing = [k for k in needed if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise CheckpointError(f"{path}: not a VisualAD checkpoint (missing {missing}); pass a file written by its "
                              "train.py (weight/train_on_*/CLIP.pth), or the --method it belongs to.")
    if payload["ln_post_weight"] is None or payload.get("transform_type", "mlp") != "mlp":
        raise CheckpointError(f"{path}: a checkpoint without ln_post or with SAF type {payload.get('transform_type')!r}; "
                              "the kit implements the released CLIP model with the 'mlp' SAF only.")
    layers = [int(layer) for layer in payload["features_list"]]
    for key, expected in RELEASED_DEFAULTS.items():
        if payload.get(key, expected) != expected:
            log.warning("%s: trained with %s=%r (the release: %r); the detector is built from the profile, so "
                        "set backbone.clip.layers / image_size to match", path, key, payload.get(key), expected)
    state = {"anomaly_token": payload["anomaly_token"], "normal_token": payload["normal_token"],
             "ln_post.weight": payload["ln_post_weight"], "ln_post.bias": payload["ln_post_bias"]}
    unknown = []
    for i, layer in enumerate(layers):
        for name, value in (payload["layer_transforms"].get(f"layer_{layer}") or {}).items():
            if name in _SAF_NAMES:
                state[f"saf.{i}.{_SAF_NAMES[name]}"] = value
            else:
                unknown.append(f"layer_transforms.layer_{layer}.{name}")
    prefix = "layer_attentions.layer_"
    for name, value in (payload.get("cross_attn") or {}).items():
        layer, _, rest = name[len(prefix):].partition(".") if name.startswith(prefix) else ("", "", "")
        if layer.isdigit() and int(layer) in layers and rest in _SCA_NAMES:
            state[f"sca.{layers.index(int(layer))}.{_SCA_NAMES[rest]}"] = value
        else:
            unknown.append(f"cross_attn.{name}")
    if unknown:
        raise CheckpointError(f"{path}: entries the released VisualAD model does not have: {unknown[:5]}; "
                              "it was written by another version of the code.")
    return {k: v.detach().float().cpu().clone() for k, v in state.items()}
