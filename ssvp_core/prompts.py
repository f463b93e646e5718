"""Learnable-token prompts through the frozen CLIP text encoder (CoOp-style), shared by every prompted method.

A template is a sentence whose placeholder words ("X") mark learnable slots, e.g. "X X X X X X X X X X bottle"
(SSVP: 5 background + 5 state vectors then the class name) or "X X X X X X X good X X X" (ViP2-CLIP). The frozen
token embeddings of the tokenized template are computed once and cached; at every step the learnable vectors are
written into the slot positions, in order, and the sequence goes through the text transformer, pooled at the
end-of-text token and projected into the joint space. Gradients flow into the learnable vectors only.

How the releases of AdaCLIP and AnomalyCLIP round inserted prompt tokens through float16 (`round_as_released`).

Also the hand-written compositional prompt ensembles (state words x templates) of APRIL-GAN and WinCLIP, each as its
authors' code builds and averages it (`PromptEnsemble`, `EnsembleTextCache`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import ClipBackbone, autocast_context

PLACEHOLDER = "X"


def placeholder_template(n_slots: int, text: str = "") -> str:
    return " ".join([PLACEHOLDER] * n_slots + ([text] if text else []))


class PromptEncoder(nn.Module):
    """Encodes templates with learnable slot vectors. Holds no trainable parameters itself."""

    def __init__(self, clip: ClipBackbone):
        super().__init__()
        self.clip = clip
        self._placeholder_id = int(clip.tokenize([PLACEHOLDER])[0, 1])
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def template(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids (P, L), frozen embeddings (P, L, W), slot mask (P, L)) for the given template texts."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            ids = self.clip.tokenize(missing).to(device)
            with torch.no_grad():
                emb = self.clip.token_embeddings(ids)
            for t, i, e in zip(missing, ids, emb):
                self._cache[t] = (i, e, i == self._placeholder_id)
        ids, emb, slots = zip(*(self._cache[t] for t in texts))
        return torch.stack(ids).to(device), torch.stack(emb).to(device), torch.stack(slots).to(device)

    def embed(self, texts: list[str], slot_vectors: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings with slots filled: (P, L, W), and the EOT index (P,).

        slot_vectors: (P, S, W) with S equal to the number of placeholders of every template (or None).
        """
        device = slot_vectors.device if slot_vectors is not None else self.clip.mean.device
        ids, emb, slots = self.template(texts, device)
        if slot_vectors is not None:
            counts = slots.sum(1)
            if not bool((counts == slot_vectors.shape[1]).all()):
                raise ValueError(f"templates have {counts.tolist()} placeholder slots but {slot_vectors.shape[1]} vectors were given")
            emb = emb.clone().to(slot_vectors.dtype)
            emb[slots] = slot_vectors.reshape(-1, slot_vectors.shape[-1])
        return emb, ids.argmax(dim=-1)

    def forward(self, texts: list[str], slot_vectors: torch.Tensor | None = None, causal: bool = True,
                hook=None, eot_shift: int = 0) -> torch.Tensor:
        """Text features (P, D) of the templates with their slots filled (not normalised).

        eot_shift: tokens a hook inserts before the end-of-text token (pooling moves with it).
        """
        emb, eot = self.embed(texts, slot_vectors)
        return self.clip.encode_text_embeddings(emb, eot + eot_shift, causal=causal, hook=hook)


def trunc_normal(shape: tuple[int, ...], std: float = 0.02, mean: float = 0.0) -> nn.Parameter:
    p = torch.empty(shape)
    nn.init.trunc_normal_(p, mean=mean, std=std, a=mean - 2 * std, b=mean + 2 * std)
    return nn.Parameter(p)


# How prompt tokens enter the float32 stream: `fp16` as the releases of AdaCLIP and AnomalyCLIP do (rounded through
# float16), `none` unrounded (float32). One option name for both methods: `options.prompt_rounding`.
PromptRounding = Literal["fp16", "none"]


def round_as_released(tokens: torch.Tensor, rounding: str) -> torch.Tensor:
    """Prompt tokens as AdaCLIP's `PromptLayer` and AnomalyCLIP's text block insert them (`rounding="fp16"`): both cast
    them with `.half()` and concatenate them into a float32 stream, which promotes them back to float32.

    Forward: each value becomes the nearest float16 (from 65520 in magnitude on: inf; up to 2^-25: zero). Backward, as
    autograd runs their code: `cat` hands the half input its slice of the gradient cast to float16 and the cast's
    backward casts it back, so the gradient reaching the prompt is rounded through float16 as well.
    `tokens.to(float16).to(tokens.dtype)` has exactly that forward and backward (tests/test_prompt_rounding.py).
    Call it on the tokens as inserted (per sentence, per image), so that the gradient is rounded before it is summed
    into a shared parameter, as theirs is. `rounding="none"` returns the tokens unchanged (float32 values and
    gradients)."""
    if rounding == "fp16":
        return tokens.to(torch.float16).to(tokens.dtype)
    if rounding == "none":
        return tokens
    raise ValueError(f"prompt_rounding={rounding!r}: choose fp16 (as released) or none")


def deep_token_hook(tokens: torch.Tensor, mode: str = "replace", alpha: float = 0.0, position: int = 1):
    """A block hook for deep prompt tokens (VPT-deep / MaPLe style), shared by DAPO and AnomalyCLIP
    (AdaCLIP's release appends and overwrites differently: methods/adaclip.py).

    tokens: (depth, n, W) or a per-sample (B, depth, n, W). Before block 0 the n tokens are inserted at `position`
    (after SOT / CLS); before block j < depth the n slots are rewritten: `replace` puts tokens[j] there (AnomalyCLIP),
    `blend` sets alpha * slot + (1 - alpha) * tokens[j] (DAPO's progressive update). Later blocks run as is.
    """
    depth = tokens.shape[-3]
    n = tokens.shape[-2]

    def at(j: int, x: torch.Tensor) -> torch.Tensor:
        t = tokens[:, j] if tokens.dim() == 4 else tokens[j].expand(x.shape[0], -1, -1)
        return t.to(x.dtype)

    def hook(j: int, x: torch.Tensor) -> torch.Tensor:
        if j == 0:
            return torch.cat([x[:, :position], at(0, x), x[:, position:]], 1)
        if j < depth:
            slot = x[:, position:position + n]
            new = alpha * slot + (1 - alpha) * at(j, x) if mode == "blend" else at(j, x)
            return torch.cat([x[:, :position], new, x[:, position + n:]], 1)
        return x

    return hook


# ---- Compositional prompt ensembles (WinCLIP, CVPR 2023 §4.1): state words x templates -------------------------------
# State words of APRIL-GAN's prompt_ensemble.py (7 normal, 5 anomalous: WinCLIP's four plus "broken {}").
NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect", "{} without damage")
ANOMALOUS_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")


@dataclass(frozen=True)
class PromptEnsemble:
    """Sentences `template.format(state.format(class_name))` for every state and template, and how their text
    features become one feature per side: `mean="normalised"` normalises every sentence feature before the mean
    (APRIL-GAN's prompt_ensemble.py), `mean="raw"` averages the raw features (anomalib's WinCLIP
    `_collect_text_embeddings`). Either way the two features are normalised afterwards (cosine scoring)."""

    name: str
    normal_states: tuple[str, ...]
    anomalous_states: tuple[str, ...]
    templates: tuple[str, ...]
    mean: Literal["normalised", "raw"]

    def texts(self, class_name: str) -> tuple[list[str], list[str]]:
        """(normal sentences, anomalous sentences), states outer, templates inner (the authors' order)."""
        def side(states):
            return [t.format(s.format(class_name)) for s in states for t in self.templates]
        return side(self.normal_states), side(self.anomalous_states)


# ByChelsea/VAND-APRIL-GAN prompt_ensemble.py: 35 templates, 7 x 35 normal and 5 x 35 anomalous sentences
APRILGAN_ENSEMBLE = PromptEnsemble("aprilgan", NORMAL_STATES, ANOMALOUS_STATES, (
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.", "a cropped photo of the {}.",
    "a bright photo of a {}.", "a dark photo of the {}.", "a photo of my {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a photo of one {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "a low resolution photo of a {}.", "a photo of a large {}.", "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a photo of the small {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "a dark photo of a {}.", "a photo of a cool {}.", "a photo of a small {}.",
    "there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.",
), mean="normalised")

# anomalib winclip/prompting.py: 7 normal and 4 anomalous states (no "broken") x 21 templates, raw mean. The
# template list holds "a jpeg corrupted photo of the {}." twice; kept, since the duplicate weighs twice in the mean.
WINCLIP_ENSEMBLE = PromptEnsemble("winclip", NORMAL_STATES, tuple(s for s in ANOMALOUS_STATES if s != "broken {}"), (
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.", "a bright photo of a {}.",
    "a bright photo of the {}.", "a dark photo of the {}.", "a dark photo of a {}.", "a jpeg corrupted photo of the {}.",
    "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.", "a blurry photo of a {}.", "a photo of a {}.",
    "a photo of the {}.", "a photo of a small {}.", "a photo of the small {}.", "a photo of a large {}.",
    "a photo of the large {}.", "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
), mean="raw")


def compositional_texts(class_name: str, ensemble: PromptEnsemble = APRILGAN_ENSEMBLE) -> tuple[list[str], list[str]]:
    """(normal sentences, anomalous sentences) of a compositional prompt ensemble for one class."""
    return ensemble.texts(class_name)


def ensemble_feature(features: torch.Tensor, mean: str) -> torch.Tensor:
    """One text feature from the sentence features (P, D) of one side: the mean of the normalised or of the raw
    features, normalised."""
    if mean == "normalised":
        features = F.normalize(features, dim=-1)
    elif mean != "raw":
        raise ValueError(f"mean={mean!r}: choose normalised or raw")
    return F.normalize(features.mean(0), dim=-1)


class EnsembleTextCache:
    """[normal, anomalous] text features (2, D) per class name from a prompt ensemble, computed once per name.

    precision: the autocast the text tower runs under (APRIL-GAN encodes its prompts under the same fp16 autocast as
    its images); the features are returned in float32."""

    def __init__(self, clip: ClipBackbone, ensemble: PromptEnsemble = APRILGAN_ENSEMBLE, precision: str = "fp32"):
        self.clip = clip
        self.ensemble = ensemble
        self.precision = precision
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, class_names: list[str]) -> torch.Tensor:
        out = []
        for name in class_names:
            if name not in self._cache:
                with torch.no_grad(), autocast_context(self.clip.mean.device, self.precision):
                    sides = [self.clip.encode_text(texts).float() for texts in self.ensemble.texts(name)]
                self._cache[name] = torch.stack([ensemble_feature(f, self.ensemble.mean) for f in sides])
            out.append(self._cache[name])
        return torch.stack(out)  # (B, 2, D)
