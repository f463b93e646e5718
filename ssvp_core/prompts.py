"""Learnable-token prompts through the frozen CLIP text encoder (CoOp-style), shared by every prompted method.

A template is a sentence whose placeholder words ("X") mark learnable slots, e.g. "X X X X X X X X X X bottle"
(SSVP: 5 background + 5 state vectors then the class name) or "X X X X X X X good X X X" (ViP2-CLIP). The frozen
token embeddings of the tokenized template are computed once and cached; at every step the learnable vectors are
written into the slot positions, in order, and the sequence goes through the text transformer, pooled at the
end-of-text token and projected into the joint space. Gradients flow into the learnable vectors only.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .backbones import ClipBackbone

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


# Compositional prompt ensemble of WinCLIP (CVPR 2023), reused by APRIL-GAN: state words x templates.
NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect", "{} without damage")
ANOMALOUS_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.", "a cropped photo of the {}.",
    "a bright photo of a {}.", "a dark photo of the {}.", "a photo of my {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a photo of one {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "a low resolution photo of a {}.", "a photo of a large {}.", "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a photo of the small {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
)


def compositional_texts(class_name: str) -> tuple[list[str], list[str]]:
    """(normal sentences, anomalous sentences) of the compositional prompt ensemble for one class."""
    normal = [t.format(s.format(class_name)) for s in NORMAL_STATES for t in TEMPLATES]
    anomalous = [t.format(s.format(class_name)) for s in ANOMALOUS_STATES for t in TEMPLATES]
    return normal, anomalous


class EnsembleTextCache:
    """[normal, anomalous] text features (2, D) per class name from the prompt ensemble, computed once."""

    def __init__(self, clip: ClipBackbone):
        self.clip = clip
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, class_names: list[str]) -> torch.Tensor:
        out = []
        for name in class_names:
            if name not in self._cache:
                normal, anomalous = compositional_texts(name)
                with torch.no_grad():
                    feats = [torch.nn.functional.normalize(self.clip.encode_text(t).float(), dim=-1).mean(0) for t in (normal, anomalous)]
                self._cache[name] = torch.nn.functional.normalize(torch.stack(feats), dim=-1)
            out.append(self._cache[name])
        return torch.stack(out)  # (B, 2, D)
