"""Bayes-PFL (Qu et al., CVPR 2025): Bayesian prompt flow learning; SSVP's baseline (its Table 3, model A).

    prompts   as SSVP Eq. 6, which follows Bayes-PFL: 3 normal + 3 abnormal prompts "[context (5)] [state (5)]
              <class>", the context shared within each pair (Bayes-PFL's prompt_context (3, 5, W)).
    flows     a distribution over the context prompts: an image-specific one (µ, log σ² from the global image
              feature by an InferenceBlock) and an image-agnostic one (learned µ, log σ²), each pushed through
              K = 10 planar normalizing flows; their samples shift the context vectors. Text features are averaged
              over Monte-Carlo samples (5 in training, 10 at test). The ELBO's KL term (base density minus flow
              log-determinants against N(0, I)) regularises both.
    pixels    one Linear(width -> joint) per tapped layer on the raw residual stream (the RCA projection), 2-way
              softmax against the text, summed over layers; Gaussian sigma 8 at test.
    score     alpha * global (CLS against the text) + (1 - alpha) * mean of the top-k map pixels, alpha = 0.5,
              k = 2000 at 518 px (20 for small-defect classes), scaled with the image area.
    training  Adam(0.5, 0.999), lr 1e-4, 30 epochs, batch 32; focal + dice + CE (+ KL).

Deviations, by necessity (the public code is the only source and is not copied): the per-class min-max of the two
score terms is a switch (`score_normalization=class_minmax`, the code's behaviour; default off, mixing the raw
probabilities); the code's two-stage fine-tuning, EMA and orthogonality loss are not reproduced.
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
from ..prompts import PromptEncoder, placeholder_template, trunc_normal
from .base import ClipDetector, Output
from .common import layer_maps, segmentation_loss
from .ssvp import inference_block

SMALL_DEFECT_CLASSES = ("capsules", "macaroni1", "macaroni2", "pipe_fryum", "screw", "cashew", "chewinggum")


class PlanarFlow(nn.Module):
    """f(z) = z + u tanh(w.z + b), with u constrained so that f is invertible (Rezende & Mohamed, 2015)."""

    def __init__(self, dim: int):
        super().__init__()
        self.u = nn.Parameter(torch.randn(dim) * 0.01)
        self.w = nn.Parameter(torch.randn(dim) * 0.01)
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wu = self.w @ self.u
        u_hat = self.u + (-1 + F.softplus(wu) - wu) * self.w / (self.w @ self.w + 1e-8)
        lin = z @ self.w + self.b
        f = z + u_hat * torch.tanh(lin)[..., None]
        psi = (1 - torch.tanh(lin) ** 2)[..., None] * self.w
        logdet = torch.log((1 + psi @ u_hat).abs() + 1e-8)
        return f, logdet


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


@dataclass
class BayesPFLOptions:
    n_prompts: int = 3
    ctx_len: int = 5
    state_len: int = 5
    n_flows: int = 10
    mc_train: int = 5
    mc_test: int = 10
    vae_hidden: int = 512
    temperature: float = 0.07
    alpha: float = 0.5  # weight of the global score
    top_k: int = 2000  # at 518 x 518
    top_k_small: int = 20
    small_defect_classes: tuple[str, ...] = SMALL_DEFECT_CLASSES
    kl_weight: float = 1e-3
    score_normalization: Literal["none", "class_minmax"] = "none"  # none | class_minmax (the code's per-class min-max of both terms)
    distributions: tuple[str, ...] = field(default_factory=lambda: ("image_specific", "image_agnostic"))


class PromptFlow(nn.Module):
    """One distribution over the context prompts: Gaussian base (image-specific or agnostic) + planar flows."""

    def __init__(self, dim: int, n_flows: int, conditional_from: int | None, hidden: int):
        super().__init__()
        self.encoder = nn.ModuleList([inference_block(conditional_from, hidden, dim), inference_block(conditional_from, hidden, dim)]) if conditional_from else None
        if conditional_from is None:
            self.mu = nn.Parameter(torch.zeros(dim))
            self.logvar = nn.Parameter(torch.full((dim,), -4.0))
        self.flows = nn.ModuleList(PlanarFlow(dim) for _ in range(n_flows))

    def sample(self, cond: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n, dim) samples and their KL estimate against N(0, I) (mean over samples and batch)."""
        B = cond.shape[0]
        if self.encoder is not None:
            mu, logvar = self.encoder[0](cond), self.encoder[1](cond).clamp(-10, 10)
        else:
            mu, logvar = self.mu.expand(B, -1), self.logvar.expand(B, -1)
        z0 = mu[:, None] + torch.randn(B, n, mu.shape[-1], device=cond.device) * (0.5 * logvar).exp()[:, None]
        log_q = gaussian_log_prob(z0, mu[:, None], logvar[:, None])
        z = z0
        for flow in self.flows:
            z, logdet = flow(z)
            log_q = log_q - logdet
        log_p = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
        return z, (log_q - log_p).mean()


class BayesPFL(ClipDetector):
    name = "bayes_pfl"

    def __init__(self, options: BayesPFLOptions, backbone, image_size: int):
        super().__init__(options, backbone, image_size)
        o = options
        w, d = self.clip.text_width, self.clip.embed_dim
        self.prompt_encoder = PromptEncoder(self.clip)
        self.context = trunc_normal((o.n_prompts, o.ctx_len, w))
        self.state_normal = trunc_normal((o.n_prompts, o.state_len, w), mean=0.5)
        self.state_abnormal = trunc_normal((o.n_prompts, o.state_len, w), mean=-0.5)
        self.flows = nn.ModuleDict()
        if "image_specific" in o.distributions:
            self.flows["image_specific"] = PromptFlow(w, o.n_flows, d, o.vae_hidden)
        if "image_agnostic" in o.distributions:
            self.flows["image_agnostic"] = PromptFlow(w, o.n_flows, None, o.vae_hidden)
        self.rca = nn.ModuleList(nn.Linear(self.clip.width, d) for _ in backbone.clip.layers)

    def prompt_parameters(self):
        return [self.context, self.state_normal, self.state_abnormal]

    def text_features(self, g: torch.Tensor, class_names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image text features (B, 2n, D) averaged over Monte-Carlo prompt samples, and the flows' KL."""
        o = self.options
        B, n = g.shape[0], o.n_prompts
        samples = o.mc_train if self.training else o.mc_test
        shift, kl = 0, g.new_zeros(())
        for flow in self.flows.values():
            z, k = flow.sample(g, samples)  # (B, S, W)
            shift, kl = shift + z, kl + k
        if not torch.is_tensor(shift):
            shift = g.new_zeros(B, 1, self.context.shape[-1])
        S = shift.shape[1]
        ctx = self.context[None, None] + shift[:, :, None, None]  # (B, S, n, L, W)
        normal = torch.cat([ctx, self.state_normal.expand(B, S, -1, -1, -1)], -2)
        abnormal = torch.cat([ctx, self.state_abnormal.expand(B, S, -1, -1, -1)], -2)
        slots = torch.cat([normal, abnormal], 2)  # (B, S, 2n, L, W)
        texts = [placeholder_template(o.ctx_len + o.state_len, name) for name in class_names for _ in range(S * 2 * n)]
        feats = self.prompt_encoder(texts, slots.flatten(0, 2)).float()
        feats = F.normalize(feats, dim=-1).view(B, S, 2 * n, -1).mean(1)
        return F.normalize(feats, dim=-1), kl

    def _pair_prob(self, feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        n = self.options.n_prompts
        sn, sa = feats @ text[:, :n].transpose(1, 2), feats @ text[:, n:].transpose(1, 2)
        return torch.sigmoid((sa - sn) / self.options.temperature).mean(-1)

    def forward(self, batch: dict) -> Output:
        o = self.options
        x = batch_view(batch, self.backbone_cfg.clip.image_size)
        with torch.no_grad(), autocast_context(x.device, self.backbone_cfg.precision):
            feats = self.clip.image_features(x)
            taps = [t[:, 1:].float() for t in feats.taps]
            g = F.normalize(self.clip.project(feats.final[:, 0]).float(), dim=-1)
        text, kl = self.text_features(g, self.class_names(batch))
        patches = [F.normalize(lin(t), dim=-1) for lin, t in zip(self.rca, taps)]
        n = o.n_prompts
        pair_text = torch.stack([text[:, :n].mean(1), text[:, n:].mean(1)], 1)  # (B, 2, D) for the maps
        maps = layer_maps(patches, F.normalize(pair_text, dim=-1), o.temperature, self.clip.grid, self.image_size)
        anomaly_map = torch.stack([m[:, 1] for m in maps]).sum(0)
        s_global = self._pair_prob(g[:, None], text)[:, 0]
        scale = (self.image_size / 518) ** 2
        ks = [max(1, int(round((o.top_k_small if c in o.small_defect_classes else o.top_k) * scale))) for c in batch["cls"]]
        flat = anomaly_map.flatten(1) / len(maps)
        s_local = torch.stack([row.topk(min(k, row.numel())).values.mean() for row, k in zip(flat, ks)])
        score = o.alpha * s_global + (1 - o.alpha) * s_local
        return Output(anomaly_map, score, {"layer_maps": maps, "kl": kl, "s_global": s_global, "s_local": s_local})

    score_part_keys = ("s_global", "s_local")

    def class_scores(self, parts: dict[str, np.ndarray]) -> np.ndarray | None:
        """The code's per-class min-max of both terms before mixing (`score_normalization=class_minmax`)."""
        if self.options.score_normalization != "class_minmax":
            return None

        def minmax(v):
            span = v.max() - v.min()
            return (v - v.min()) / span if span > 0 else np.zeros_like(v)

        return self.options.alpha * minmax(parts["s_global"]) + (1 - self.options.alpha) * minmax(parts["s_local"])

    def loss(self, out: Output, batch: dict) -> dict[str, torch.Tensor]:
        local = segmentation_loss(out.aux["layer_maps"], batch["mask"])
        image = F.binary_cross_entropy(out.aux["s_global"].clamp(1e-6, 1 - 1e-6), batch["label"].float())
        kl = out.aux["kl"]
        return {"local": local, "image": image, "kl": kl, "total": local + image + self.options.kl_weight * kl}
