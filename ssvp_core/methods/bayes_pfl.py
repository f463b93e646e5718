"""Bayes-PFL (Qu et al., CVPR 2025): Bayesian prompt flow learning; SSVP's baseline (its Table 3, model A).

The released method (xiaozhen228/Bayes-PFL @ 8f155a0; the files named below), proven against its outputs by
`tests/parity/test_parity_bayes_pfl.py`:

    prompts   a bank of 3 pairs "[context (5)] [state (5)] <class>"; the context is shared within a pair, the states
              are per pair (models/VPB.py:198-200, 304-305), initialised trunc-normal(0.02) at 0, +0.5, -0.5
              (:234-236). Class names through the code's mapping, digits kept (VPB.py:8-18, 252-262).
    flows     image-specific: an encoder (two InferenceBlocks) on the frozen global feature (ln_post, proj; not
              normalised) gives mu and a variance exp(h / 2); K = 10 *amortised* planar flows whose u, w, b are
              Linear layers of that feature (models/PFL.py:96-116) push the sample; it shifts the 5 **context**
              tokens. Image-agnostic: two flows (normal, abnormal) that share one encoder fed by their own learned
              `state` vector, with free planar parameters (PFL.py:163-200, VPB.py:224-225); their samples shift the
              5 **state** tokens of the normal resp. abnormal prompts (VPB.py:156-157). Planar step without the
              invertibility constraint, log-det log(|1 + psi.u| + 1e-5) (models/flows.py). One sample per image in
              training (the agnostic one shared by the batch); 10 at test, the agnostic samples drawn at the first
              test batch and reused for the whole test set (VPB.py:277-283).
    pixels    RCA per tapped layer (VPB.py:82-109): a bias-free Linear(width -> joint) on the raw residual stream,
              normalised; a 4-head cross-attention of the text over those patches (shared Linear query, scale
              joint**-0.5, residual, re-normalisation) gives per-image, per-layer text; logits = exp(t_pixel) x
              patches . text, upsampled (bilinear, align_corners=True), then a 2-way softmax per (prompt, sample)
              pair; the map is the mean over layers and pairs (test.py:158-164). Gaussian sigma 8 at test.
    image     stage-2 path (test.py:133-136): class_mapping(text) against image_mapping(global + fuse(taps)) x
              exp(t_image), a softmax per pair, mean over pairs (test.py:153-156); fuse = attention pooling of the
              4 layers' concatenated taps (VPB.py:113-130). Score = alpha minmax(global) + (1 - alpha) minmax(mean
              of the top-k pixels of the unsmoothed map), min-max per class, alpha 0.5, k 2000 at 518 px (20 for 7
              small-defect classes) (models/metric_and_visualization.py:160-189).
    training  stage 1 (train.py:216-246): CE on one random prompt pair + per layer class-balanced focal + Dice of
              the abnormal channel pooled over the batch (loss.py:27-68) on that pair + 0.01 x KL of each of the
              3 flows + the prompts' orthogonality loss (loss.py:7-25). Stage 2: CE alone, training only
              class_mapping, image_mapping and fuse at a constant lr (train.py:161, 242). Adam(0.5, 0.999); prompts
              1e-3, flow parameters 1e-3, linear layers 1e-4, temperatures 0.01 (train.py:138-160); cosine with 10 %
              warm-up; batch 32, 30 epochs, seed 333 (train.sh).

Not reproduced (README): the stage switch and the early stop are decided by validation on 5 classes of the *target*
dataset with best-snapshot restore (train.py:171-199, 274-299; EMA.save_check/load_check): model selection on the
target set is leakage under the zero-shot protocol, so here the last `stage2_epochs` epochs are stage 2 and the
last epoch is kept. Albumentations on every training image and the 40 % four-image mosaic on MVTec (datasets.py)
are not reproduced: the kit trains every method on un-augmented images. The Adam moments of class_mapping carry
over into stage 2 (the code starts a fresh optimiser). The frozen decoders (VPB.py:209-219, PFL.py:26-29) feed
only a reconstruction term the code no longer uses and are omitted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import autocast_context
from ..data.loader import batch_view
from ..errors import ConfigError
from ..prompts import PromptEncoder, placeholder_template
from .base import ClipDetector, Output
from .losses import balanced_focal, batch_dice, orthogonality_loss
from .ssvp import inference_block

SMALL_DEFECT_CLASSES = ("capsules", "macaroni1", "macaroni2", "pipe_fryum", "screw", "cashew", "chewinggum")
# The code's prompt names (VPB.py:8-18) and its BTAD class names (dataset/datasets/BTAD.py); others lower-cased as is
RELEASED_PROMPT_NAMES = {
    "macaroni1": "macaroni", "macaroni2": "macaroni", "pcb1": "printed circuit board",
    "pcb2": "printed circuit board", "pcb3": "printed circuit board", "pcb4": "printed circuit board",
    "pipe_fryum": "pipe fryum", "chewinggum": "chewing gum", "metal_nut": "metal nut",
    "01": "metal1", "02": "wood", "03": "metal2",
}
MINMAX_EPS = 1e-8  # metric_and_visualization.py:187-188


def planar_step(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One planar flow as the code (flows.py): f(z) = z + u tanh(w.z + b), log|det| = log(|1 + (1 - tanh^2) w.u| + 1e-5).

    z (..., D); u, w broadcastable to z; b broadcastable to z[..., :1]. No invertibility constraint on u."""
    h = torch.tanh((z * w).sum(-1, keepdim=True) + b)
    logdet = torch.log((1 + (1 - h ** 2) * (w * u).sum(-1, keepdim=True)).abs() + 1e-5)
    return z + u * h, logdet.squeeze(-1)


class GaussianEncoder(nn.Module):
    """Mean and variance heads (two InferenceBlocks, VPB.py:43-53). The code returns exp(h / 2) and uses it as the
    variance (std = its square root, log-variance = its log: PFL.py:38-41, loss.py:94)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.mean = inference_block(dim, hidden, dim)
        self.log_variance = inference_block(dim, hidden, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(x), torch.exp(0.5 * self.log_variance(x))


def log_density_ratio(z0, zk, mu, var) -> torch.Tensor:
    """Per-row log q(z0) - log N(zk; 0, I), without the 2 pi constants (loss.py:83-97, models/utils.py:16)."""
    log_q = (-0.5 * (var.log() + (z0 - mu) ** 2 / var)).sum(-1)
    log_p = (-0.5 * zk ** 2).sum(-1)
    return log_q - log_p


class ImageFlow(nn.Module):
    """The image-specific distribution (PFL_context): Gaussian from the global feature, amortised planar flows."""

    def __init__(self, dim: int, hidden: int, n_flows: int):
        super().__init__()
        self.encoder = GaussianEncoder(dim, hidden)
        self.amor_u = nn.Linear(dim, n_flows * dim)
        self.amor_w = nn.Linear(dim, n_flows * dim)
        self.amor_b = nn.Linear(dim, n_flows)
        self.n_flows = n_flows

    def forward(self, g: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """g (B, D), eps (B, S, D) standard normal -> samples (B, S, D), log density ratios and log-dets (B, S)."""
        B, D = g.shape
        mu, var = self.encoder(g)
        u = self.amor_u(g).view(B, self.n_flows, 1, D)
        w = self.amor_w(g).view(B, self.n_flows, 1, D)
        b = self.amor_b(g).view(B, self.n_flows, 1, 1)
        z0 = eps * var.sqrt()[:, None] + mu[:, None]
        z, logdet = z0, 0
        for k in range(self.n_flows):
            z, ld = planar_step(z, u[:, k], w[:, k], b[:, k])
            logdet = logdet + ld
        return z, log_density_ratio(z0, z, mu[:, None], var[:, None]), logdet


class StateFlow(nn.Module):
    """An image-agnostic distribution (PFL_normal / PFL_abnormal): the shared encoder applied to a learned `state`
    vector, then free planar flows (PFL.py:163-200; parameters initialised N(0, 1) as there)."""

    def __init__(self, dim: int, n_flows: int):
        super().__init__()
        self.state = nn.Parameter(torch.randn(dim))
        self.u = nn.Parameter(torch.randn(n_flows, dim))
        self.w = nn.Parameter(torch.randn(n_flows, dim))
        self.b = nn.Parameter(torch.randn(n_flows))

    def forward(self, encoder: GaussianEncoder, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """eps (S, D) -> samples (S, D), log density ratios and log-dets (S,)."""
        mu, var = encoder(self.state[None])
        z0 = eps * var.sqrt() + mu
        z, logdet = z0, 0
        for k in range(self.u.shape[0]):
            z, ld = planar_step(z, self.u[k], self.w[k], self.b[k, None])
            logdet = logdet + ld
        return z, log_density_ratio(z0, z, mu, var), logdet


class RCA(nn.Module):
    """Zero_Parameter (VPB.py:82-109): per-layer bias-free projection of the raw taps and text-over-patches attention."""

    def __init__(self, width: int, dim: int, n_layers: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"bayes_pfl: joint width {dim} is not divisible by rca_heads={heads}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)  # the code's 1x1 Conv1d, shared by the layers
        self.patch_proj = nn.ModuleList(nn.Linear(width, dim, bias=False) for _ in range(n_layers))

    def forward(self, text: torch.Tensor, taps: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """text (B, T, D), taps (B, N, width) -> (per-image text (B, T, D), patch features (B, N, D)), both unit."""
        B, T, D = text.shape
        patches = self.patch_proj[layer](taps)
        patches = patches / patches.norm(dim=-1, keepdim=True)
        q = self.query(text).view(B, T, self.heads, D // self.heads).transpose(1, 2)
        kv = patches.view(B, -1, self.heads, D // self.heads).transpose(1, 2)
        # softmax(q k^T / sqrt(D)) v with keys = values = the patches; the code scales by the full width, not per head
        out = F.scaled_dot_product_attention(q, kv, kv, scale=D ** -0.5).transpose(1, 2).reshape(B, T, D) + text
        return out / out.norm(dim=-1, keepdim=True), patches


class TapPooling(nn.Module):
    """Global_Feature `fuse` (VPB.py:113-130): attention pooling of the concatenated taps into the joint space."""

    def __init__(self, width: int, n_layers: int, hidden: int, dim: int):
        super().__init__()
        self.hidden = nn.Linear(width * n_layers, hidden)
        self.attention = nn.Linear(hidden, 1)
        self.output = nn.Linear(hidden, dim)

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        x = self.hidden(torch.cat(taps, dim=-1))
        return self.output((self.attention(x).softmax(1) * x).sum(1))


@dataclass
class BayesPFLOptions:
    n_prompts: int = 3  # B of the paper (--prompt_num)
    ctx_len: int = 5  # P
    state_len: int = 5  # Q
    n_flows: int = 10  # K
    mc_test: int = 10  # R at test (test.sh --sample_num 10); training draws one sample per image
    vae_hidden: int = 0  # hidden width of the InferenceBlocks; 0 = half the vision width (the code's d_theta)
    rca_heads: int = 4
    temperature_init: float = 0.07  # both learnable temperatures start at log(1 / 0.07)
    alpha: float = 0.5  # weight of the global score
    top_k: int = 2000  # pixels at `top_k_size`, scaled with the image area
    top_k_small: int = 20
    top_k_size: int = 518
    small_defect_classes: tuple[str, ...] = SMALL_DEFECT_CLASSES
    kl_weight: float = 0.01  # for each of the 3 flows (VPB.py:312)
    orthogonality_weight: float = 1.0  # 0 = the paper's Prompt Flow Loss (Eq. 7) without the code's extra term
    stage2_epochs: int = 5  # last epochs trained as stage 2 (image mapping only); 0 = one stage, image score from
    # the stage-1 path (class_mapping(text) against the raw global feature)
    score_normalization: Literal["class_minmax", "none"] = "class_minmax"  # class_minmax (code) | none (raw mix)
    class_names: Literal["released", "kit"] = "released"  # the code's prompt names | the kit's prompt_name()
    lr_flow: float = 1e-3  # the flows' u, w, b and state vectors (--learning_rate_PFL)
    lr_temperature: float = 0.01
    distributions: tuple[str, ...] = field(default_factory=lambda: ("image_specific", "image_agnostic"))


class BayesPFL(ClipDetector):
    name = "bayes_pfl"
    score_part_keys = ("s_global", "s_local")

    def __init__(self, options: BayesPFLOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = options
        unknown = set(o.distributions) - {"image_specific", "image_agnostic"}
        if unknown:
            raise ConfigError(f"bayes_pfl options.distributions: unknown {sorted(unknown)}; use image_specific, image_agnostic")
        w, d, width = self.clip.text_width, self.clip.embed_dim, self.clip.width
        if w != d:  # the code adds joint-space samples to token embeddings (true of every OpenAI CLIP it supports)
            raise ConfigError(f"bayes_pfl needs the CLIP text width ({w}) to equal its joint width ({d})")
        hidden = o.vae_hidden or width // 2
        n_layers = len(backbone.clip.layers)
        self.prompt_encoder = PromptEncoder(self.clip)
        self.context = self._prompt((o.n_prompts, o.ctx_len, w), 0.0)
        self.state_normal = self._prompt((o.n_prompts, o.state_len, w), 0.5)
        self.state_abnormal = self._prompt((o.n_prompts, o.state_len, w), -0.5)
        self.temperature_pixel = nn.Parameter(torch.tensor(math.log(1 / o.temperature_init)))
        self.temperature_image = nn.Parameter(torch.tensor(math.log(1 / o.temperature_init)))
        self.image_flow = ImageFlow(d, hidden, o.n_flows)
        self.state_encoder = GaussianEncoder(d, hidden)
        self.normal_flow = StateFlow(d, o.n_flows)
        self.abnormal_flow = StateFlow(d, o.n_flows)
        self.rca = RCA(width, d, n_layers, o.rca_heads)
        self.fuse = TapPooling(width, n_layers, width // 2, d)
        self.class_mapping = nn.Linear(d, d)
        self.image_mapping = nn.Linear(d, d)
        heads = (self.image_flow, self.state_encoder, self.rca.patch_proj, self.fuse, self.class_mapping, self.image_mapping)
        for m in (m for head in heads for m in head.modules()):  # VPB.py:241-250; the RCA query (a Conv1d there) and
            if isinstance(m, nn.Linear):  # the frozen CLIP keep their own initialisation
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.stage = 1
        self._agnostic: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def _prompt(shape, mean: float) -> nn.Parameter:
        p = torch.empty(shape)
        nn.init.trunc_normal_(p, mean=mean, std=0.02)  # bounds +-2 absolute, as the code
        return nn.Parameter(p)

    # ---- seams a parity test overrides to replay the authors' random draws ------------------------------------
    def standard_normal(self, role: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Standard-normal draws of the flows; role: image (B, S, D) | normal (S, D) | abnormal (S, D)."""
        return torch.randn(shape, device=like.device, dtype=like.dtype)

    def training_pair(self, device: torch.device) -> int:
        """The prompt pair a training step optimises (one random pair of the bank per step, train.py:223)."""
        return int(torch.randint(0, self.options.n_prompts, (1,)).item())

    # ---- parameters and schedule ---------------------------------------------------------------------------
    def prompt_parameters(self):
        return [self.context, self.state_normal, self.state_abnormal]

    def temperature_parameters(self):
        return [self.temperature_pixel, self.temperature_image]

    def flow_parameters(self):
        return [*self.image_flow.amor_u.parameters(), *self.image_flow.amor_w.parameters(), *self.image_flow.amor_b.parameters(),
                *self.normal_flow.parameters(), *self.abnormal_flow.parameters()]

    def stage2_parameters(self):
        return [*self.class_mapping.parameters(), *self.image_mapping.parameters(), *self.fuse.parameters()]

    def param_groups(self, train) -> list[dict]:
        """The code's groups (train.py:138-161): prompts, flow parameters, linear layers, temperatures; the three
        stage-2 modules at a constant lr_head (the code's stage-2 optimiser has no schedule)."""
        o = self.options
        named = [(self.prompt_parameters(), train.lr_prompt, "prompts", None), (self.flow_parameters(), o.lr_flow, "flows", None),
                 (self.temperature_parameters(), o.lr_temperature, "temperature", None),
                 (self.stage2_parameters(), train.lr_head, "stage2", "constant")]
        taken = {id(p) for params, *_ in named for p in params}
        named.insert(2, ([p for p in self.parameters() if p.requires_grad and id(p) not in taken], train.lr_head, "heads", None))
        groups = []
        for params, lr, name, schedule in named:
            params = [p for p in params if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": lr, "name": name, **({"schedule": schedule} if schedule else {})})
        return groups

    def start_epoch(self, epoch: int, epochs: int) -> None:
        o = self.options
        if o.stage2_epochs >= epochs:
            raise ConfigError(f"bayes_pfl options.stage2_epochs={o.stage2_epochs} leaves no stage-1 epoch of {epochs}")
        self.stage = 2 if o.stage2_epochs and epoch >= epochs - o.stage2_epochs else 1

    def train(self, mode: bool = True):
        self._agnostic = None  # a new evaluation draws its image-agnostic samples afresh (once)
        return super().train(mode)

    def class_names(self, batch: dict) -> list[str]:
        if self.prompt_class_name or self.options.class_names == "kit":
            return super().class_names(batch)
        return [RELEASED_PROMPT_NAMES.get(c, c).lower() for c in batch["cls"]]

    # ---- forward -------------------------------------------------------------------------------------------
    def prompt_shifts(self, g: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Context shifts (B, S, D), normal and abnormal state shifts (S, D), and the flows' KL (unweighted sum).

        KL as the code (loss.py:70-113): (sum of log q(z0) - log p(zk) - log|det|) / B for the image flow. The
        agnostic flows draw one row per step, which the code broadcasts against a B-row prior: their density ratio
        counts B times and their log-det once, both then divided by B."""
        o = self.options
        B, D = g.shape
        kl = g.new_zeros(())
        ctx = g.new_zeros(B, samples, D)
        if "image_specific" in o.distributions:
            ctx, ratio, logdet = self.image_flow(g, self.standard_normal("image", (B, samples, D), g))
            kl = kl + (ratio.sum() - logdet.sum()) / B
        normal = abnormal = g.new_zeros(samples, D)
        if "image_agnostic" in o.distributions:
            if self.training or self._agnostic is None:
                normal, ratio_n, logdet_n = self.normal_flow(self.state_encoder, self.standard_normal("normal", (samples, D), g))
                abnormal, ratio_a, logdet_a = self.abnormal_flow(self.state_encoder, self.standard_normal("abnormal", (samples, D), g))
                kl = kl + ratio_n.sum() + ratio_a.sum() - (logdet_n.sum() + logdet_a.sum()) / B
                if not self.training:
                    self._agnostic = (normal, abnormal)
            else:
                normal, abnormal = self._agnostic
        return ctx, normal, abnormal, kl

    def text_features(self, g: torch.Tensor, class_names: list[str], samples: int):
        """Unit text features (B, S, 2, P, D) ([normal, abnormal] x prompt) of the shifted prompt bank, and the KL."""
        o = self.options
        B, P = g.shape[0], o.n_prompts
        ctx_shift, normal_shift, abnormal_shift, kl = self.prompt_shifts(g, samples)
        ctx = (self.context[None, None] + ctx_shift[:, :, None, None]).expand(B, samples, P, -1, -1)
        normal = (self.state_normal[None] + normal_shift[:, None, None]).expand(B, -1, -1, -1, -1)
        abnormal = (self.state_abnormal[None] + abnormal_shift[:, None, None]).expand(B, -1, -1, -1, -1)
        slots = torch.stack([torch.cat([ctx, normal], -2), torch.cat([ctx, abnormal], -2)], 2)  # (B, S, 2, P, L, W)
        texts = [placeholder_template(o.ctx_len + o.state_len, name) for name in class_names for _ in range(samples * 2 * P)]
        with autocast_context(g.device, self.backbone_cfg.precision):
            feats = self.prompt_encoder(texts, slots.flatten(0, 3))
        feats = feats.float().view(B, samples, 2, P, -1)
        return feats / feats.norm(dim=-1, keepdim=True), kl

    def pixel_logit_gaps(self, text: torch.Tensor, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per layer: abnormal minus normal logits of every (sample, prompt) pair, upsampled: (B, S * P, H, W).
        The 2-way softmax of upsampled logits is the sigmoid of this gap (the code softmaxes after upsampling)."""
        B, S, _, P, D = text.shape
        flat = text.reshape(B, S * 2 * P, D)
        out = []
        for layer, tap in enumerate(taps):
            text_l, patches = self.rca(flat, tap, layer)
            logits = self.temperature_pixel.exp() * patches @ text_l.transpose(1, 2)  # (B, N, S*2*P)
            logits = logits.view(B, -1, S, 2, P)
            gap = (logits[..., 1, :] - logits[..., 0, :]).flatten(2).transpose(1, 2).reshape(B, S * P, *self.clip.grid)
            out.append(F.interpolate(gap, size=(self.image_size,) * 2, mode="bilinear", align_corners=True))
        return out

    def image_logits(self, text: torch.Tensor, g: torch.Tensor, taps: list[torch.Tensor], stage: int,
                     temperature: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, P, 2) [normal, abnormal] logits: class_mapping(text) against the raw global feature (stage 1) or
        image_mapping(global + fuse(taps)) (stage 2), times exp(t_image) (VPB.py:314-341)."""
        mapped = self.class_mapping(text)
        mapped = mapped / mapped.norm(dim=-1, keepdim=True)
        image = self.image_mapping(g + self.fuse(taps)) if stage == 2 else g
        image = image / image.norm(dim=-1, keepdim=True)
        scale = (self.temperature_image if temperature is None else temperature).exp()
        return scale * torch.einsum("bsjpd,bd->bspj", mapped, image)

    cacheable = True  # the CLIP is frozen and sees no augmentation; everything trainable runs on its outputs

    def frozen_features(self, batch: dict) -> dict[str, torch.Tensor]:
        """The raw taps without CLS (B, L, N, W) and the global feature (B, D): ln_post, proj, not normalised."""
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        with torch.no_grad(), autocast_context(x.device, self.backbone_cfg.precision):
            feats = self.clip.image_features(x)
            return {"taps": torch.stack([t[:, 1:] for t in feats.taps], 1).float(),
                    "global": self.clip.project(feats.final[:, 0]).float()}  # the code's image_features

    def heads(self, features: dict[str, torch.Tensor], batch: dict) -> Output:
        o = self.options
        taps, g = list(features["taps"].unbind(1)), features["global"]
        if self.training:
            return self._train_forward(batch, g, taps)
        text, _ = self.text_features(g, self.class_names(batch), o.mc_test)
        gaps = self.pixel_logit_gaps(text, taps)
        anomaly_map = torch.stack([torch.sigmoid(gp).mean(1) for gp in gaps]).mean(0)  # mean over layers and pairs
        stage = 2 if o.stage2_epochs > 0 else 1
        s_global = self.image_logits(text, g, taps, stage).softmax(-1)[..., 1].flatten(1).mean(1)
        s_local = self.top_k_mean(anomaly_map, batch["cls"])
        score = o.alpha * s_global + (1 - o.alpha) * s_local
        return Output(anomaly_map, score, {"s_global": s_global, "s_local": s_local})

    def _train_forward(self, batch: dict, g: torch.Tensor, taps: list[torch.Tensor]) -> Output:
        pair = self.training_pair(g.device)
        if self.stage == 2:  # only class_mapping, image_mapping and fuse learn (train.py:161, 242)
            with torch.no_grad():
                text, kl = self.text_features(g, self.class_names(batch), 1)
                gaps = [gp[:, 0] for gp in self.pixel_logit_gaps(text[:, :, :, pair:pair + 1], taps)]
            logits = self.image_logits(text, g, taps, 2, self.temperature_image.detach())[:, 0, pair]
        else:
            text, kl = self.text_features(g, self.class_names(batch), 1)
            gaps = [gp[:, 0] for gp in self.pixel_logit_gaps(text[:, :, :, pair:pair + 1], taps)]
            logits = self.image_logits(text, g, taps, 1)[:, 0, pair]
        anomaly_map = torch.stack([torch.sigmoid(gp) for gp in gaps]).mean(0)
        score = logits.softmax(-1)[:, 1]
        return Output(anomaly_map, score, {"gaps": gaps, "logits": logits, "kl": kl, "text": text[:, 0], "stage": self.stage})

    def top_k_mean(self, anomaly_map: torch.Tensor, classes: list[str]) -> torch.Tensor:
        """Mean of the k highest pixels of the unsmoothed map (metric_and_visualization.py:160-171)."""
        o = self.options
        scale = (self.image_size / o.top_k_size) ** 2
        flat = anomaly_map.flatten(1)
        ks = [max(1, min(flat.shape[1], int(round((o.top_k_small if c in o.small_defect_classes else o.top_k) * scale))))
              for c in classes]
        return torch.stack([row.topk(k).values.mean() for row, k in zip(flat, ks)])

    def class_scores(self, parts: dict[str, np.ndarray]) -> np.ndarray | None:
        """alpha minmax(global) + (1 - alpha) minmax(top-k) over the images of a class (metric_and_visualization.py:187-189)."""
        if self.options.score_normalization != "class_minmax":
            return None

        def minmax(v):
            return (v - v.min()) / (v.max() - v.min() + MINMAX_EPS)

        return self.options.alpha * minmax(parts["s_global"]) + (1 - self.options.alpha) * minmax(parts["s_local"])

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        """Stage 1: CE + sum over layers (balanced focal + batch Dice) + KL + orthogonality (train.py:225-240);
        stage 2: CE alone."""
        o = self.options
        image = F.cross_entropy(out.aux["logits"], batch["label"].long())
        if out.aux["stage"] == 2:
            return {"image": image, "total": image}
        mask = (batch["mask"] > 0.5).float()
        local = 0
        for gap in out.aux["gaps"]:
            probs = torch.stack([torch.sigmoid(-gap), torch.sigmoid(gap)], 1)
            local = local + balanced_focal(probs, mask) + batch_dice(probs[:, 1], mask)
        kl = o.kl_weight * out.aux["kl"]
        text = out.aux["text"]  # (B, 2, P, D)
        ortho = orthogonality_loss(text[:, 0]) + orthogonality_loss(text[:, 1])
        total = image + local + kl + o.orthogonality_weight * ortho
        return {"image": image, "local": local, "kl": kl, "orthogonal": ortho, "total": total}
